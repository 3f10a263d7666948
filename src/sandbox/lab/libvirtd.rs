//! The private libvirtd per node: its start with the test driver prepared
//! before clients see it, stop/restart, extra domains, qemu guests and
//! bridge networks.

use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail, ensure};

use super::super::cmd::{CmdOutput, excerpt, run_checked, wait_until};
use super::super::conf::{self, LIBVIRT_SETUP_SOCK_DIR, LIBVIRT_SETUP_URI, QEMU_URI};
use super::super::prereq::which;
use super::super::procs::{Proc, stop_group};
use super::{Inner, Lab, POLL, STOP_GRACE, lock};

const LIBVIRTD_TIMEOUT: Duration = Duration::from_secs(20);

/// A test-driver domain the lab defines on a node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabDomain {
    pub name: String,
    pub uuid: String,
    /// Initial state: running (true) or shut off (false).
    pub running: bool,
}

/// The lab's test-driver domains of node `node` (1-based):
/// vm<i>a (…11), vm<i>b (…12) running, vm<i>off (…19) shut off.
pub fn lab_domains(node: usize) -> Vec<LabDomain> {
    [("a", 0x11, true), ("b", 0x12, true), ("off", 0x19, false)]
        .into_iter()
        .map(|(suffix, nn, running)| LabDomain {
            name: format!("vm{node}{suffix}"),
            uuid: format!("8f1e{node:04x}-0000-4000-8000-0000000000{nn:02x}"),
            running,
        })
        .collect()
}

/// Deterministic UUID for a lab qemu domain.
pub fn qemu_domain_uuid(node: usize, name: &str) -> String {
    // FNV-1a, 48 bits are plenty for test names.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in name.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!(
        "8f1e{node:04x}-0000-4000-9000-{:012x}",
        h & 0xffff_ffff_ffff
    )
}

impl Lab {
    pub(super) fn spawn_libvirtd(&self, g: &mut Inner, i: usize) -> Result<()> {
        let h = self.holder_pid(i)?;
        let nd = self.node_dir(i);
        let node = &mut g.nodes[i - 1];
        if !node.virtlogd.as_mut().is_some_and(|p| p.running()) {
            let vl = self.tools.virtlogd.to_string_lossy().into_owned();
            let mut c = self.nsenter_cmd(h, &[&vl]);
            node.virtlogd = Some(Proc::spawn(
                &mut c,
                &format!("virtlogd/n{i}"),
                "virtlogd",
                &nd.join("virtlogd.log"),
                &self.pids_file,
            )?);
        }
        // Remove a stale setup socket dir content (from a killed libvirtd).
        if let Ok(p) = self.node_path(i, LIBVIRT_SETUP_SOCK_DIR)
            && let Ok(rd) = std::fs::read_dir(&p)
        {
            for e in rd.flatten() {
                let _ = std::fs::remove_file(e.path());
            }
        }
        let lv = self.tools.libvirtd.to_string_lossy().into_owned();
        let mut c = self.nsenter_cmd(h, &[&lv]);
        node.libvirtd = Some(Proc::spawn(
            &mut c,
            &format!("libvirtd/n{i}"),
            "libvirtd",
            &nd.join("libvirtd.err"),
            &self.pids_file,
        )?);
        Ok(())
    }

    /// Wait for a freshly spawned libvirtd (bound to the setup socket dir),
    /// prepare its test driver, then publish its sockets in /run/libvirt so
    /// clients never see the built-in "test" domain.
    pub(super) fn finish_libvirtd(&self, i: usize) -> Result<()> {
        let virsh = self.tools.virsh.to_string_lossy().into_owned();
        let mut last = String::new();
        let ready = wait_until(LIBVIRTD_TIMEOUT, POLL, || {
            match self.exec_timeout(
                i,
                &[&virsh, "-c", LIBVIRT_SETUP_URI, "version"],
                Duration::from_secs(10),
            ) {
                Ok(o) if o.success() => return true,
                Ok(o) => last = excerpt(&o.stderr, 300),
                Err(e) => last = format!("{e:#}"),
            }
            // Stop early if libvirtd died.
            let mut g = lock(&self.inner);
            g.nodes[i - 1]
                .libvirtd
                .as_mut()
                .is_some_and(|p| p.running())
        });
        if !ready {
            let mut g = lock(&self.inner);
            let d = g.nodes[i - 1]
                .libvirtd
                .as_mut()
                .map(|p| p.diagnose())
                .unwrap_or_default();
            bail!("libvirtd on node {i} did not get ready (last virsh error: {last}); {d}");
        }
        // The ready check may have ended because libvirtd died.
        {
            let mut g = lock(&self.inner);
            let Some(p) = g.nodes[i - 1].libvirtd.as_mut() else {
                bail!("libvirtd on node {i} is not tracked");
            };
            if !p.running() {
                bail!("libvirtd on node {i} exited: {}", p.diagnose());
            }
        }
        self.spawn_keeper(i)?;
        // Until the keeper's connection is up, every setup connection gets a
        // fresh test driver; repeat the (idempotent) setup until it sticks.
        let mut last: Result<()> = Ok(());
        let mut respawns = 0;
        let ok = wait_until(Duration::from_secs(15), Duration::from_millis(20), || {
            last = self.setup_test_driver(i, LIBVIRT_SETUP_URI);
            if last.is_ok() {
                return true;
            }
            let keeper_alive = lock(&self.inner).nodes[i - 1]
                .keeper
                .as_mut()
                .is_some_and(|p| p.running());
            if !keeper_alive && respawns < 5 {
                respawns += 1;
                if let Err(e) = self.spawn_keeper(i) {
                    last = Err(e);
                }
            }
            false
        });
        if !ok {
            let mut g = lock(&self.inner);
            let node = &mut g.nodes[i - 1];
            let keeper = node
                .keeper
                .as_mut()
                .map(|p| p.diagnose())
                .unwrap_or_default();
            // Whether libvirtd itself is still there, and what it said.
            let libvirtd = node
                .libvirtd
                .as_mut()
                .map(|p| p.diagnose())
                .unwrap_or_default();
            drop(g);
            return Err(last
                .err()
                .unwrap_or_else(|| anyhow!("timeout"))
                .context(format!(
                    "node {i}: preparing libvirtd's test driver (keeper respawned {respawns}x; {keeper}; {libvirtd})"
                )));
        }
        self.publish_libvirt_sockets(i)
    }

    fn spawn_keeper(&self, i: usize) -> Result<()> {
        let h = self.holder_pid(i)?;
        let virsh = self.tools.virsh.to_string_lossy().into_owned();
        let mut c = self.nsenter_cmd(
            h,
            &[
                &virsh,
                "-c",
                LIBVIRT_SETUP_URI,
                "event",
                "--all",
                "--loop",
                "--timestamp",
            ],
        );
        let mut g = self.inner()?;
        let node = &mut g.nodes[i - 1];
        if let Some(old) = node.keeper.as_mut() {
            stop_group(&mut [old], libc::SIGTERM, STOP_GRACE);
        }
        node.keeper = Some(Proc::spawn(
            &mut c,
            &format!("keeper/n{i}"),
            "virsh",
            &self.node_dir(i).join("libvirt-events.log"),
            &self.pids_file,
        )?);
        Ok(())
    }

    /// Remove the built-in "test" domain and bring the lab domains to their
    /// initial state; idempotent. Fails unless the result is verified.
    fn setup_test_driver(&self, i: usize, uri: &str) -> Result<()> {
        let virsh = self.tools.virsh.to_string_lossy().into_owned();
        let run_virsh = |script: &str| -> Result<CmdOutput> {
            let o = self.exec(i, &[&virsh, "-c", uri, script])?;
            // virsh runs every command of a script and returns the last status.
            ensure!(
                o.success() && !o.stderr.contains("error:"),
                "node {i}: virsh `{script}` failed: {}",
                excerpt(&o.stderr, 600)
            );
            Ok(o)
        };
        let state = || -> Result<(Vec<String>, Vec<String>)> {
            let o = run_virsh("list --all --name ; echo --- ; list --name")?;
            let text = o.stdout;
            let (all, running) = text.split_once("---").unwrap_or((&text, ""));
            let split = |t: &str| -> Vec<String> {
                t.lines()
                    .map(|l| l.trim().to_string())
                    .filter(|l| !l.is_empty())
                    .collect()
            };
            Ok((split(all), split(running)))
        };
        let wanted = if self.spec.domains {
            lab_domains(i)
        } else {
            Vec::new()
        };
        let (all, running) = state()?;
        let mut script: Vec<String> = Vec::new();
        if all.iter().any(|n| n == "test") {
            if running.iter().any(|n| n == "test") {
                script.push("destroy test".into());
            }
            script.push("undefine test".into());
        }
        for d in &wanted {
            if !all.contains(&d.name) {
                let xml = self.node_dir(i).join(format!("{}.xml", d.name));
                script.push(format!("define {}", xml.display()));
            }
            if d.running && !running.contains(&d.name) {
                script.push(format!("start {}", d.name));
            }
        }
        if !script.is_empty() {
            run_virsh(&script.join(" ; "))?;
        }
        let (all, running) = state()?;
        ensure!(
            !all.iter().any(|n| n == "test"),
            "node {i}: built-in test domain still present"
        );
        for d in &wanted {
            ensure!(
                all.contains(&d.name) && running.contains(&d.name) == d.running,
                "node {i}: domain {} not in its initial state (all={all:?} running={running:?})",
                d.name
            );
        }
        Ok(())
    }

    fn publish_libvirt_sockets(&self, i: usize) -> Result<()> {
        let from = self.node_path(i, LIBVIRT_SETUP_SOCK_DIR)?;
        let to = self.node_path(i, "/run/libvirt")?;
        std::fs::create_dir_all(&to).with_context(|| format!("creating {}", to.display()))?;
        for s in ["libvirt-sock", "libvirt-sock-ro", "libvirt-admin-sock"] {
            let src = from.join(s);
            if src.exists() {
                std::fs::rename(&src, to.join(s)).with_context(|| {
                    format!("node {i}: moving {} into /run/libvirt", src.display())
                })?;
            }
        }
        ensure!(
            to.join("libvirt-sock").exists(),
            "node {i}: libvirtd did not create libvirt-sock"
        );
        Ok(())
    }

    fn remove_published_sockets(&self, i: usize) {
        if let Ok(to) = self.node_path(i, "/run/libvirt") {
            for s in ["libvirt-sock", "libvirt-sock-ro", "libvirt-admin-sock"] {
                let _ = std::fs::remove_file(to.join(s));
            }
        }
    }

    /// Stop node i's libvirtd (SIGTERM, then SIGKILL after 3 s). virtlogd and
    /// qemu guests keep running. Its sockets disappear, as on a real host.
    pub fn stop_libvirtd(&self, i: usize) -> Result<()> {
        self.check_node(i)?;
        let mut g = self.inner()?;
        let node = &mut g.nodes[i - 1];
        let Some(p) = node.libvirtd.as_mut() else {
            bail!("libvirtd on node {i} is not running");
        };
        if !p.running() {
            bail!("libvirtd on node {i} is not running");
        }
        let mut ps: Vec<&mut Proc> = vec![p];
        ps.extend(node.keeper.as_mut());
        stop_group(&mut ps, libc::SIGTERM, STOP_GRACE);
        node.libvirtd = None;
        node.keeper = None;
        drop(g);
        self.remove_published_sockets(i);
        Ok(())
    }

    /// Start node i's libvirtd. The test driver starts fresh, so the lab
    /// removes the built-in "test" domain and defines the lab domains again
    /// in their initial states before clients can connect.
    pub fn start_libvirtd(&self, i: usize) -> Result<()> {
        self.check_node(i)?;
        {
            let mut g = self.inner()?;
            if g.nodes[i - 1]
                .libvirtd
                .as_mut()
                .is_some_and(|p| p.running())
            {
                bail!("libvirtd on node {i} is already running");
            }
            self.spawn_libvirtd(&mut g, i)?;
        }
        self.finish_libvirtd(i)
    }

    pub fn restart_libvirtd(&self, i: usize) -> Result<()> {
        self.stop_libvirtd(i)?;
        self.start_libvirtd(i)
    }

    pub fn libvirtd_pid(&self, i: usize) -> Option<u32> {
        self.running_pid(i, |n| &mut n.libvirtd)
    }

    /// A bridge name for node i with the lab prefix: `<P><tag><i>`
    /// (at most 15 characters for tags of up to 3).
    pub fn bridge_name(&self, i: usize, tag: &str) -> String {
        format!("{}{tag}{i}", self.prefix)
    }

    /// Defines (does not start) a libvirt network `name` on node i's
    /// qemu:///system: forward mode bridge on `bridge`, which is created
    /// inside the node (up, no addresses), so no dnsmasq or firewall is
    /// involved and no traffic leaves the node.
    pub fn define_network(&self, i: usize, name: &str, bridge: &str) -> Result<()> {
        let ok = |s: &str, max: usize| {
            !s.is_empty()
                && s.len() <= max
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        };
        ensure!(ok(name, 64), "bad network name {name:?}");
        ensure!(ok(bridge, 15), "bad bridge name {bridge:?}");
        let ip = self.tools.ip.to_string_lossy().into_owned();
        let exists = self.exec(i, &[&ip, "link", "show", bridge])?.success();
        if !exists {
            self.exec_ok(i, &[&ip, "link", "add", bridge, "type", "bridge"])?;
        }
        self.exec_ok(i, &[&ip, "link", "set", bridge, "up"])?;
        let xml = self.node_dir(i).join(format!("{name}.net.xml"));
        std::fs::write(&xml, conf::bridge_network_xml(name, bridge))
            .with_context(|| format!("writing {}", xml.display()))?;
        self.virsh_uri(i, QEMU_URI, &["net-define", &xml.to_string_lossy()])?;
        Ok(())
    }

    /// Define and start a real qemu (TCG, 32 MiB, no disk) domain on node i's
    /// qemu:///system. Returns its UUID ([`qemu_domain_uuid`]).
    pub fn start_qemu_domain(&self, i: usize, name: &str) -> Result<String> {
        self.start_qemu_domain_on(i, name, None)
    }

    /// [`Lab::start_qemu_domain`] with one interface (e1000, MAC
    /// [`Lab::qemu_domain_mac`]) on libvirt network `network`, when given.
    pub fn start_qemu_domain_on(
        &self,
        i: usize,
        name: &str,
        network: Option<&str>,
    ) -> Result<String> {
        ensure!(
            !name.is_empty()
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
            "bad domain name {name:?}"
        );
        ensure!(
            which("qemu-system-x86_64").is_some(),
            "qemu-system-x86_64 not found (Debian package: qemu-system-x86)"
        );
        let uuid = qemu_domain_uuid(i, name);
        let xml = self.node_dir(i).join(format!("{name}.qemu.xml"));
        let nic = network.map(|n| (n, Self::qemu_domain_mac(&uuid)));
        std::fs::write(
            &xml,
            conf::qemu_domain_xml_nic(name, &uuid, nic.as_ref().map(|(n, m)| (*n, m.as_str()))),
        )
        .with_context(|| format!("writing {}", xml.display()))?;
        self.virsh_uri(i, QEMU_URI, &["define", &xml.to_string_lossy()])?;
        let virsh = self.tools.virsh.to_string_lossy().into_owned();
        let mut c = self.node_command(i, &[&virsh, "-c", QEMU_URI, "start", name])?;
        run_checked(&mut c, Duration::from_secs(60)).with_context(|| format!("node {i}"))?;
        self.adopt_qemu_domain(i, name)?;
        Ok(uuid)
    }

    /// Record the qemu process of node i's running domain `name` (started
    /// by the lab, or by a live migration into node i) so that teardown
    /// ends it by PID.
    pub fn adopt_qemu_domain(&self, i: usize, name: &str) -> Result<()> {
        let pidfile = self.node_path(i, &format!("/run/libvirt/qemu/{name}.pid"))?;
        let pid: u32 = std::fs::read_to_string(&pidfile)
            .with_context(|| format!("reading {}", pidfile.display()))?
            .trim()
            .parse()
            .with_context(|| format!("parsing {}", pidfile.display()))?;
        let mut g = self.inner()?;
        if let Some(p) = Proc::adopt(pid, &format!("qemu/n{i}/{name}"), &self.pids_file) {
            g.nodes[i - 1].qemu.push(p);
        }
        Ok(())
    }

    /// `virsh migrate --live --persistent` of node `from`'s qemu domain
    /// `name` to node `to`'s libvirtd (its socket through `/proc/PID/root`,
    /// the migration stream over the lab network), as a command to spawn.
    /// The source keeps its definition, shut off with reason "migrated".
    /// `extra`: more virsh options, e.g. `["--bandwidth", "2"]` (MiB/s).
    pub fn migrate_command(
        &self,
        from: usize,
        to: usize,
        name: &str,
        extra: &[&str],
    ) -> Result<std::process::Command> {
        self.check_node(to)?;
        let dest = format!(
            "qemu+unix:///system?socket=/proc/{}/root/run/libvirt/libvirt-sock",
            self.holder_pid(to)?
        );
        let stream = format!("tcp://{}", self.node_ip(to));
        let virsh = self.tools.virsh.to_string_lossy().into_owned();
        let mut argv = vec![
            virsh.as_str(),
            "-c",
            QEMU_URI,
            "migrate",
            "--live",
            "--persistent",
            name,
            &dest,
            "--migrateuri",
            &stream,
        ];
        argv.extend_from_slice(extra);
        self.node_command(from, &argv)
    }

    /// The MAC address a lab qemu domain with this UUID gets (52:54:00 +
    /// the UUID's last three bytes).
    pub fn qemu_domain_mac(uuid: &str) -> String {
        let hex: String = uuid.chars().filter(char::is_ascii_hexdigit).collect();
        let t = &hex[hex.len().saturating_sub(6)..];
        format!("52:54:00:{}:{}:{}", &t[0..2], &t[2..4], &t[4..6])
    }

    /// Define (and optionally start) an extra test-driver domain on node i,
    /// e.g. the same name/UUID on two nodes for conflict tests. Unlike the
    /// lab domains, it is not restored after a libvirtd restart.
    pub fn define_test_domain(&self, i: usize, name: &str, uuid: &str, start: bool) -> Result<()> {
        ensure!(
            !name.is_empty()
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.'),
            "bad domain name {name:?}"
        );
        ensure!(
            uuid.len() == 36 && uuid.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-'),
            "bad uuid {uuid:?}"
        );
        let xml = self.node_dir(i).join(format!("{name}.extra.xml"));
        std::fs::write(&xml, conf::test_domain_xml(name, uuid))
            .with_context(|| format!("writing {}", xml.display()))?;
        self.virsh(i, &["define", &xml.to_string_lossy()])?;
        if start {
            self.virsh(i, &["start", name])?;
        }
        Ok(())
    }
}
