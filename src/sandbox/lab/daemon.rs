//! The fenceline daemon on each node, and its network hook installed into
//! the node's private /etc/libvirt/hooks.

use std::path::Path;
use std::process::ExitStatus;
use std::time::Duration;

use anyhow::{Result, bail};

use super::super::cmd::{CmdOutput, wait_until};
use super::super::procs::Proc;
use super::{Inner, Lab, POLL, lock};

const DAEMON_TIMEOUT: Duration = Duration::from_secs(20);

impl Lab {
    /// Installs fenceline's network hook into node i's private
    /// /etc/libvirt/hooks (`fenceline install-hook`). libvirtd reads the
    /// hooks directory when it starts: call this before (re)starting it.
    pub fn install_hook(&self, i: usize) -> Result<CmdOutput> {
        let conf = self.fenceline_config_path(i);
        let conf = conf.to_string_lossy().into_owned();
        let bin = self.fenceline_bin()?.to_string_lossy().into_owned();
        self.exec_ok(
            i,
            &[
                &bin,
                "--config",
                &conf,
                "install-hook",
                "--hooks-dir",
                "/etc/libvirt/hooks",
            ],
        )
    }

    pub(super) fn spawn_daemon(&self, g: &mut Inner, i: usize) -> Result<()> {
        let h = self.holder_pid(i)?;
        let bin = self.fenceline_bin()?.to_string_lossy().into_owned();
        let program = Path::new(&bin)
            .file_name()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| bin.clone());
        let conf = self.fenceline_config_path(i);
        let mut c = self.nsenter_cmd(h, &[&bin, "daemon", "--config", &conf.to_string_lossy()]);
        g.nodes[i - 1].daemon = Some(Proc::spawn(
            &mut c,
            &format!("fenceline/n{i}"),
            &program,
            &self.node_dir(i).join("fenceline.err"),
            &self.pids_file,
        )?);
        Ok(())
    }

    pub(super) fn wait_daemon_ready(&self, i: usize) -> Result<()> {
        let sock = self.node_path(i, "/run/fenceline/fenceline-ro.sock")?;
        let mut exited = false;
        let ok = wait_until(DAEMON_TIMEOUT, POLL, || {
            if std::os::unix::net::UnixStream::connect(&sock).is_ok() {
                return true;
            }
            let mut g = lock(&self.inner);
            exited = !g.nodes[i - 1].daemon.as_mut().is_some_and(|p| p.running());
            exited
        });
        if ok && !exited {
            return Ok(());
        }
        let mut g = lock(&self.inner);
        let d = g.nodes[i - 1]
            .daemon
            .as_mut()
            .map(|p| p.diagnose())
            .unwrap_or_default();
        bail!(
            "fenceline daemon on node {i} did not open /run/fenceline/fenceline-ro.sock within {DAEMON_TIMEOUT:?}: {d}"
        )
    }

    /// Start the fenceline daemon on node i and wait until its read-only
    /// socket accepts connections.
    pub fn start_daemon(&self, i: usize) -> Result<()> {
        self.check_node(i)?;
        {
            let mut g = self.inner()?;
            if g.nodes[i - 1].daemon.as_mut().is_some_and(|p| p.running()) {
                bail!("fenceline daemon on node {i} is already running");
            }
            self.spawn_daemon(&mut g, i)?;
        }
        self.wait_daemon_ready(i)
    }

    /// Send `signal` to node i's fenceline daemon. For terminating signals,
    /// wait up to 10 s for it to exit (an error if it does not) and return
    /// its exit status.
    pub fn stop_daemon(&self, i: usize, signal: i32) -> Result<Option<ExitStatus>> {
        self.stop_proc(i, signal, "fenceline daemon", |n| &mut n.daemon, false)
    }

    pub fn daemon_pid(&self, i: usize) -> Option<u32> {
        self.running_pid(i, |n| &mut n.daemon)
    }
}
