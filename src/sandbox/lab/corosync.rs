//! corosync on each node: start, kill, and what `corosync-quorumtool`
//! reports about membership and quorum.

use std::time::Duration;

use anyhow::{Result, anyhow, bail, ensure};

use super::super::cmd::{excerpt, file_excerpt, wait_until};
use super::super::procs::{Proc, clean_qb_shm};
use super::{Inner, Lab, is_terminating, lock};

/// Result of `corosync-quorumtool -s` on a node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuorumInfo {
    pub quorate: bool,
    /// "Nodes:" line: number of members.
    pub nodes: usize,
    /// Node ids listed under "Membership information".
    pub members: Vec<u32>,
}

pub(crate) fn parse_quorumtool(text: &str) -> Option<QuorumInfo> {
    let mut quorate = None;
    let mut nodes = None;
    let mut members = Vec::new();
    let mut in_members = false;
    for line in text.lines() {
        let l = line.trim();
        if let Some(v) = l.strip_prefix("Quorate:") {
            quorate = Some(v.trim().starts_with("Yes"));
        } else if let Some(v) = l.strip_prefix("Nodes:") {
            nodes = v.trim().parse().ok();
        } else if l.starts_with("Membership information") {
            in_members = true;
        } else if in_members && let Some(first) = l.split_whitespace().next() {
            let id = first
                .strip_prefix("0x")
                .map(|h| u32::from_str_radix(h, 16).ok())
                .unwrap_or_else(|| first.parse().ok());
            if let Some(id) = id {
                members.push(id);
            }
        }
    }
    Some(QuorumInfo {
        quorate: quorate?,
        nodes: nodes?,
        members,
    })
}

impl Lab {
    /// `corosync-quorumtool -s` on node i, parsed.
    pub fn quorum(&self, i: usize) -> Result<QuorumInfo> {
        let q = self.tools.quorumtool.to_string_lossy().into_owned();
        let out = self.exec_timeout(i, &[&q, "-s"], Duration::from_secs(10))?;
        parse_quorumtool(&out.stdout).ok_or_else(|| {
            anyhow!(
                "node {i}: cannot parse corosync-quorumtool -s ({}): {} {}",
                out.status,
                excerpt(&out.stdout, 300),
                excerpt(&out.stderr, 300)
            )
        })
    }

    /// Wait until node i sees exactly `members` members (and, if
    /// `members > nodes/2`, quorum). Returns the last observation on timeout.
    pub fn wait_members(&self, i: usize, members: usize, timeout: Duration) -> Result<QuorumInfo> {
        let want_quorate = members * 2 > self.spec.nodes;
        let mut last: Result<QuorumInfo> = Err(anyhow!("not checked"));
        let ok = wait_until(timeout, Duration::from_millis(100), || {
            last = self.quorum(i);
            matches!(&last, Ok(q) if q.nodes == members && q.quorate == want_quorate)
        });
        if ok {
            return last;
        }
        match last {
            Ok(q) => bail!("node {i}: wanted {members} members, last saw {q:?} after {timeout:?}"),
            Err(e) => Err(e.context(format!("node {i}: waiting for {members} members"))),
        }
    }

    pub(super) fn corosync_diag(&self, i: usize) -> String {
        let mut g = lock(&self.inner);
        let running = g.nodes[i - 1].corosync.as_mut().map(|p| p.diagnose());
        format!(
            "corosync of node {i}: {}; corosync.log: {}",
            running.unwrap_or_else(|| "not running".into()),
            file_excerpt(&self.node_dir(i).join("corosync.log"), 600)
        )
    }

    pub(super) fn spawn_corosync(&self, g: &mut Inner, i: usize) -> Result<()> {
        let h = self.holder_pid(i)?;
        let conf = self.node_dir(i).join("corosync.conf");
        let cs = self.tools.corosync.to_string_lossy().into_owned();
        let mut c = self.nsenter_cmd(h, &[&cs, "-f", "-c", &conf.to_string_lossy()]);
        let log = self.node_dir(i).join("corosync.out");
        let p = Proc::spawn(
            &mut c,
            &format!("corosync/n{i}"),
            "corosync",
            &log,
            &self.pids_file,
        )?;
        let node = &mut g.nodes[i - 1];
        node.corosync_pids.push(p.pid);
        node.corosync = Some(p);
        Ok(())
    }

    /// Start corosync on node i again (it must not be running). Does not wait
    /// for membership; use [`Lab::wait_members`].
    pub fn start_corosync(&self, i: usize) -> Result<()> {
        self.check_node(i)?;
        let mut g = self.inner()?;
        if g.nodes[i - 1]
            .corosync
            .as_mut()
            .is_some_and(|p| p.running())
        {
            bail!("corosync on node {i} is already running");
        }
        self.spawn_corosync(&mut g, i)
    }

    /// Send `signal` (e.g. `libc::SIGKILL`) to node i's corosync. For
    /// terminating signals, waits up to 10 s for it to exit and removes its
    /// libqb leftovers from /dev/shm.
    pub fn kill_corosync(&self, i: usize, signal: i32) -> Result<()> {
        self.check_node(i)?;
        let mut g = self.inner()?;
        let node = &mut g.nodes[i - 1];
        let Some(p) = node.corosync.as_mut() else {
            bail!("corosync on node {i} is not running");
        };
        if !p.running() {
            bail!("corosync on node {i} is not running");
        }
        ensure!(
            p.signal(signal),
            "corosync on node {i} (pid {}) is not running",
            p.pid
        );
        if is_terminating(signal) {
            ensure!(
                p.wait_exit(Duration::from_secs(10)),
                "corosync on node {i} (pid {}) did not exit after signal {signal}",
                p.pid
            );
            clean_qb_shm(p.pid);
            node.corosync = None;
        }
        Ok(())
    }

    pub fn corosync_pid(&self, i: usize) -> Option<u32> {
        self.running_pid(i, |n| &mut n.corosync)
    }
}
