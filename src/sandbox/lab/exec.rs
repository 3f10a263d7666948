//! Running commands inside a node (`nsenter -t <holder> -m -n`), in the
//! client namespace, and the node's virsh and fenceline binary.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, ensure};

use super::super::cmd::{CmdOutput, DEFAULT_TIMEOUT, excerpt, run, run_checked};
use super::super::conf::TEST_URI;
use super::Lab;

impl Lab {
    pub(super) fn nsenter_cmd(&self, holder: u32, argv: &[&str]) -> Command {
        let mut c = Command::new(&self.tools.nsenter);
        c.arg("-t")
            .arg(holder.to_string())
            .args(["-m", "-n", "--"])
            .args(argv)
            .current_dir("/");
        c
    }

    /// A `Command` that runs `argv` inside node i (its mount + network namespaces).
    pub fn node_command(&self, i: usize, argv: &[&str]) -> Result<Command> {
        ensure!(!argv.is_empty(), "empty argv");
        Ok(self.nsenter_cmd(self.holder_pid(i)?, argv))
    }

    /// Run `argv` inside node i with a 30 s deadline. A non-zero exit is not an error.
    pub fn exec(&self, i: usize, argv: &[&str]) -> Result<CmdOutput> {
        self.exec_timeout(i, argv, DEFAULT_TIMEOUT)
    }

    pub fn exec_timeout(&self, i: usize, argv: &[&str], timeout: Duration) -> Result<CmdOutput> {
        let mut c = self.node_command(i, argv)?;
        run(&mut c, timeout).with_context(|| format!("node {i}"))
    }

    /// Like [`Lab::exec`], but a non-zero exit is an error with a stderr excerpt.
    pub fn exec_ok(&self, i: usize, argv: &[&str]) -> Result<CmdOutput> {
        let mut c = self.node_command(i, argv)?;
        run_checked(&mut c, DEFAULT_TIMEOUT).with_context(|| format!("node {i}"))
    }

    /// Run `argv` in the client-only namespace (`ip netns exec <P>c`).
    pub fn exec_client(&self, argv: &[&str], timeout: Duration) -> Result<CmdOutput> {
        let ns = self
            .client_netns()
            .ok_or_else(|| anyhow!("lab has no client namespace (LabSpec.client_ns)"))?;
        ensure!(!argv.is_empty(), "empty argv");
        let mut c = Command::new(&self.tools.ip);
        c.args(["netns", "exec", &ns]).args(argv);
        run(&mut c, timeout).context("client namespace")
    }

    /// `virsh -c test+unix:///default <args>` on node i; non-zero exit is an error.
    /// Returns stdout.
    pub fn virsh(&self, i: usize, args: &[&str]) -> Result<String> {
        self.virsh_uri(i, TEST_URI, args)
    }

    /// `virsh -c <uri> <args>` on node i; non-zero exit is an error. Returns stdout.
    pub fn virsh_uri(&self, i: usize, uri: &str, args: &[&str]) -> Result<String> {
        let virsh = self.tools.virsh.to_string_lossy().into_owned();
        let mut argv = vec![virsh.as_str(), "-c", uri];
        argv.extend_from_slice(args);
        Ok(self.exec_ok(i, &argv)?.stdout)
    }

    /// Run the fenceline binary inside node i (e.g. `["status", "--json"]`).
    pub fn fenceline(&self, i: usize, args: &[&str]) -> Result<CmdOutput> {
        let bin = self.fenceline_bin()?.to_string_lossy().into_owned();
        let mut argv = vec![bin.as_str()];
        argv.extend_from_slice(args);
        self.exec(i, &argv)
    }

    /// `fenceline status --json` on node i, parsed.
    pub fn status_json(&self, i: usize) -> Result<serde_json::Value> {
        let out = self.fenceline(i, &["status", "--json"])?;
        ensure!(
            out.success(),
            "node {i}: `fenceline status --json` failed ({}): {}",
            out.status,
            excerpt(&out.stderr, 600)
        );
        serde_json::from_str(&out.stdout).with_context(|| {
            format!(
                "node {i}: `fenceline status --json` printed invalid JSON: {}",
                excerpt(&out.stdout, 400)
            )
        })
    }

    pub(super) fn fenceline_bin(&self) -> Result<&Path> {
        self.spec
            .fenceline_bin
            .as_deref()
            .ok_or_else(|| anyhow!("LabSpec.fenceline_bin is not set"))
    }
}
