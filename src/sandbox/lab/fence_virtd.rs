//! The real fence_virtd (cpg backend) on nodes that play a fence_virt
//! host, with the restart loop around its startup race.

use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};

use super::super::cmd::wait_until;
use super::super::conf::{self, TEST_URI};
use super::super::prereq;
use super::super::procs::Proc;
use super::super::procs::{self, stop_group};
use super::{Inner, Lab, STOP_GRACE, lock};

const FENCE_VIRTD_TRIES: usize = 20;
/// fence_virtd's multicast listener port (UDP), in the hex form of /proc/net/udp.
const FENCE_VIRTD_PORT_HEX: &str = ":04CD";

impl Lab {
    fn spawn_fence_virtd(&self, g: &mut Inner, i: usize) -> Result<()> {
        let h = self.holder_pid(i)?;
        let nd = self.node_dir(i);
        let fv = self
            .tools
            .fence_virtd
            .as_ref()
            .ok_or_else(|| anyhow!("fence_virtd not found (Debian package: fence-virtd)"))?
            .to_string_lossy()
            .into_owned();
        let stdbuf = self
            .tools
            .stdbuf
            .as_ref()
            .ok_or_else(|| anyhow!("stdbuf not found (Debian package: coreutils)"))?
            .to_string_lossy()
            .into_owned();
        let conf = nd.join("fence_virt.conf");
        if !conf.exists() {
            if !self.fence_key_path().exists() {
                self.write_fence_key()?;
            }
            let module = prereq::fence_virt_module_path()
                .ok_or_else(|| anyhow!("fence-virt plugin directory not found"))?;
            std::fs::write(
                &conf,
                conf::fence_virt_conf(&self.fence_key_path(), &module, TEST_URI),
            )
            .with_context(|| format!("writing {}", conf.display()))?;
        }
        let pidf = nd.join("fence_virtd.pid");
        let _ = std::fs::remove_file(&pidf);
        // Pinned to one CPU: the race is fence_virtd's new dispatch thread
        // running before its creator stores the CPG handle; on one CPU the
        // creator usually runs on first, so far fewer restarts are needed.
        let mut c = self.nsenter_cmd(
            h,
            &[
                "taskset",
                "-c",
                "0",
                &stdbuf,
                "-oL",
                "-eL",
                &fv,
                "-F",
                "-w",
                "-d",
                "3",
                "-f",
                &conf.to_string_lossy(),
                "-p",
                &pidf.to_string_lossy(),
            ],
        );
        g.nodes[i - 1].fence_virtd = Some(Proc::spawn(
            &mut c,
            &format!("fence_virtd/n{i}"),
            "fence_virtd",
            &nd.join("fence_virtd.log"),
            &self.pids_file,
        )?);
        Ok(())
    }

    /// Is fence_virtd's multicast listener bound in node i's namespace?
    fn fence_virtd_listening(pid: u32) -> bool {
        std::fs::read_to_string(format!("/proc/{pid}/net/udp")).is_ok_and(|s| {
            s.lines().skip(1).any(|l| {
                l.split_whitespace()
                    .nth(1)
                    .is_some_and(|a| a.ends_with(FENCE_VIRTD_PORT_HEX))
            })
        })
    }

    /// Start fence_virtd on the given nodes, working around its startup race
    /// (a dead cpg dispatch thread, sandbox-cluster.md §5.5a): once its
    /// listener is bound (backend init is done by then), it must have at least
    /// 2 threads, else it is killed and restarted (up to 20 tries).
    pub fn start_fence_virtds(&self, nodes: &[usize]) -> Result<()> {
        for &i in nodes {
            self.check_node(i)?;
        }
        let mut pending: Vec<usize> = nodes.to_vec();
        for attempt in 1..=FENCE_VIRTD_TRIES {
            {
                let mut g = self.inner()?;
                for &i in &pending {
                    if g.nodes[i - 1]
                        .fence_virtd
                        .as_mut()
                        .is_some_and(|p| p.running())
                    {
                        bail!("fence_virtd on node {i} is already running");
                    }
                    self.spawn_fence_virtd(&mut g, i)?;
                }
            }
            let pids: Vec<(usize, u32)> = {
                let g = lock(&self.inner);
                pending
                    .iter()
                    .filter_map(|&i| g.nodes[i - 1].fence_virtd.as_ref().map(|p| (i, p.pid)))
                    .collect()
            };
            wait_until(Duration::from_secs(10), Duration::from_millis(20), || {
                pids.iter().all(|&(i, pid)| {
                    Self::fence_virtd_listening(pid)
                        || !lock(&self.inner).nodes[i - 1]
                            .fence_virtd
                            .as_mut()
                            .is_some_and(|p| p.running())
                })
            });
            // Backend init (which creates the cpg dispatch thread) precedes
            // listener init; a bad dispatch thread dies right away. Give it a
            // moment, then count threads.
            std::thread::sleep(Duration::from_millis(500));
            let mut failed = Vec::new();
            let mut g = self.inner()?;
            for &(i, pid) in &pids {
                let p = g.nodes[i - 1].fence_virtd.as_mut();
                let Some(p) = p else { continue };
                if !p.running() {
                    bail!("fence_virtd on node {i} exited: {}", p.diagnose());
                }
                let listening = Self::fence_virtd_listening(pid);
                let threads = procs::thread_count(pid);
                if listening && threads >= 2 {
                    continue;
                }
                if attempt == FENCE_VIRTD_TRIES {
                    bail!(
                        "fence_virtd on node {i} still broken after {FENCE_VIRTD_TRIES} tries \
                         (listening={listening}, threads={threads}): {}",
                        p.diagnose()
                    );
                }
                stop_group(&mut [p], libc::SIGKILL, STOP_GRACE);
                g.nodes[i - 1].fence_virtd = None;
                failed.push(i);
            }
            if failed.is_empty() {
                return Ok(());
            }
            pending = failed;
        }
        Ok(())
    }

    pub fn start_fence_virtd(&self, i: usize) -> Result<()> {
        self.start_fence_virtds(&[i])
    }

    /// Send `signal` to node i's fence_virtd; for terminating signals wait up
    /// to 5 s, then SIGKILL (a hung fence_virtd ignores SIGTERM).
    pub fn stop_fence_virtd(&self, i: usize, signal: i32) -> Result<()> {
        self.stop_proc(i, signal, "fence_virtd", |n| &mut n.fence_virtd, true)
            .map(|_| ())
    }

    pub fn fence_virtd_pid(&self, i: usize) -> Option<u32> {
        self.running_pid(i, |n| &mut n.fence_virtd)
    }
}
