//! Network topology: the switch namespace with its bridge, one namespace
//! per node (and the optional client) attached by a veth, links up and
//! down, and the holder process that owns each node's namespaces.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};

use super::super::cmd::{run_checked, wait_until};
use super::super::conf;
use super::super::procs::{self, Proc};
use super::{Inner, Lab, host_pcmk, lock};

impl Lab {
    /// Take node i's link to the bridge down (network partition) or up again.
    pub fn set_link(&self, i: usize, up: bool) -> Result<()> {
        self.check_node(i)?;
        let sw = self.switch_netns();
        let veth = format!("{}v{i}", self.prefix);
        self.ip(&[
            "-n",
            &sw,
            "link",
            "set",
            &veth,
            if up { "up" } else { "down" },
        ])
    }

    fn ip(&self, args: &[&str]) -> Result<()> {
        run_checked(
            Command::new(&self.tools.ip).args(args),
            Duration::from_secs(10),
        )?;
        Ok(())
    }

    fn add_netns(&self, ns: &str) -> Result<()> {
        lock(&self.inner).namespaces.push(ns.to_string());
        self.ip(&["netns", "add", ns])
    }

    pub(super) fn attach(&self, ns: &str, veth: &str, addr: &str) -> Result<()> {
        let sw = self.switch_netns();
        let br = format!("{}br0", self.prefix);
        self.add_netns(ns)?;
        self.ip(&[
            "link", "add", "eth0", "netns", ns, "type", "veth", "peer", "name", veth, "netns", &sw,
        ])?;
        self.ip(&["-n", &sw, "link", "set", veth, "master", &br, "up"])?;
        self.ip(&[
            "-n",
            ns,
            "addr",
            "add",
            &format!("{addr}/24"),
            "dev",
            "eth0",
        ])?;
        self.ip(&["-n", ns, "link", "set", "eth0", "up"])?;
        self.ip(&["-n", ns, "link", "set", "lo", "up"])?;
        self.ip(&["-n", ns, "route", "add", "224.0.0.0/4", "dev", "eth0"])?;
        Ok(())
    }

    pub(super) fn build_topology(&self) -> Result<()> {
        let sw = self.switch_netns();
        let br = format!("{}br0", self.prefix);
        self.add_netns(&sw)?;
        self.ip(&[
            "-n",
            &sw,
            "link",
            "add",
            &br,
            "type",
            "bridge",
            "mcast_snooping",
            "0",
        ])?;
        self.ip(&["-n", &sw, "link", "set", &br, "up"])?;
        for i in 1..=self.spec.nodes {
            let veth = format!("{}v{i}", self.prefix);
            self.attach(&self.netns(i), &veth, &self.node_ip(i))
                .with_context(|| format!("network of node {i}"))?;
        }
        if let Some(c) = self.client_netns() {
            let veth = format!("{}vc", self.prefix);
            self.attach(&c, &veth, &self.client_ip())
                .context("client namespace")?;
        }
        Ok(())
    }

    pub(super) fn start_holders(&self) -> Result<()> {
        for i in 1..=self.spec.nodes {
            let mut script = conf::holder_script(&self.dir, i);
            if self.spec.host_pacemaker {
                script = host_pcmk::with_pacemaker(&script, &self.node_dir(i));
            }
            let log = self.node_dir(i).join("holder.log");
            let p = self.spawn_holder(&self.netns(i), &script, &format!("holder/n{i}"), &log)?;
            lock(&self.inner).nodes[i - 1].holder = Some(p);
        }
        for i in 1..=self.spec.nodes {
            let log = self.node_dir(i).join("holder.log");
            let pid = self.wait_holder(&log, |g| g.nodes[i - 1].holder.as_mut())?;
            if let Some(slot) = lock(&self.holders).get_mut(i - 1) {
                *slot = Some(pid);
            }
        }
        Ok(())
    }

    /// Spawn a holder: `script` (which prints "ready", then execs `sleep`)
    /// in network namespace `ns` and a new private mount namespace.
    pub(super) fn spawn_holder(
        &self,
        ns: &str,
        script: &str,
        role: &str,
        log: &Path,
    ) -> Result<Proc> {
        let mut c = Command::new(&self.tools.ip);
        c.args(["netns", "exec", ns])
            .arg(&self.tools.unshare)
            .args(["-m", "--propagation", "private"])
            .arg(&self.tools.sh)
            .args(["-c", script]);
        Proc::spawn(&mut c, role, "sleep", log, &self.pids_file)
    }

    /// Wait until the holder in `slot` printed "ready" to `log` and exec'd
    /// `sleep`; returns its pid.
    pub(super) fn wait_holder(
        &self,
        log: &Path,
        slot: impl Fn(&mut Inner) -> Option<&mut Proc>,
    ) -> Result<u32> {
        let ready = wait_until(Duration::from_secs(10), Duration::from_millis(5), || {
            std::fs::read_to_string(log).is_ok_and(|s| s.contains("ready"))
        });
        let mut g = lock(&self.inner);
        let h = slot(&mut g).ok_or_else(|| anyhow!("holder vanished ({})", log.display()))?;
        if !ready || !h.running() {
            bail!("holder did not get ready: {}", h.diagnose());
        }
        let pid = h.pid;
        drop(g);
        // After "ready" the shell execs sleep; wait for that.
        wait_until(Duration::from_secs(2), Duration::from_millis(2), || {
            procs::program_of(pid).as_deref() == Some("sleep")
        });
        Ok(pid)
    }
}
