//! Tearing a lab down: every process by PID, namespaces, libqb leftovers,
//! the tmux server and the scratch dir; also on `Drop`.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};

use super::super::cmd::run;
use super::super::conf::QEMU_URI;
use super::super::prereq::which;
use super::super::procs::{Proc, clean_qb_shm, stop_group};
use super::super::stale::{self, KEPT_MARKER, ns_belongs_to};
use super::{KEEP_ENV, Lab, STOP_GRACE, lock};

pub(crate) fn kill_tmux_server(prefix: &str) {
    let sock = format!("{prefix}tmux");
    // SAFETY: getuid has no preconditions.
    let uid = unsafe { libc::getuid() };
    let mut dirs = vec![PathBuf::from(format!("/tmp/tmux-{uid}"))];
    if let Some(d) = std::env::var_os("TMUX_TMPDIR") {
        dirs.insert(0, PathBuf::from(d).join(format!("tmux-{uid}")));
    }
    let Some(path) = dirs.into_iter().map(|d| d.join(&sock)).find(|p| p.exists()) else {
        return;
    };
    if let Some(tmux) = which("tmux") {
        let _ = run(
            Command::new(tmux).args(["-L", &sock, "kill-server"]),
            Duration::from_secs(5),
        );
    }
    let _ = std::fs::remove_file(path);
}

impl Lab {
    /// Tear the lab down: daemons, fence_virtds, qemu guests, corosyncs,
    /// libvirtds + virtlogds, holders (all by PID: SIGTERM, 3 s, SIGKILL),
    /// namespaces, libqb leftovers, the tmux server, and the scratch dir
    /// (kept if FENCELINE_KEEP_LAB=1). Idempotent.
    pub fn down(&self) -> Result<()> {
        let t0 = Instant::now();
        let mut g = lock(&self.inner);
        if g.down {
            return Ok(());
        }
        g.down = true;
        let mut problems: Vec<String> = Vec::new();

        // 0. the guest cluster: every pacemaker and corosync process of the
        //    guests and their holders, by pid.
        problems.extend(Self::stop_guests(&mut g));
        // 0b. the hosts' Pacemaker (`LabSpec.host_pacemaker`), by pid.
        problems.extend(self.stop_host_pacemaker(&mut g));

        // 1. fenceline daemons and fence_virtds.
        {
            let mut ps: Vec<&mut Proc> = Vec::new();
            for n in g.nodes.iter_mut() {
                ps.extend(n.daemon.as_mut());
                ps.extend(n.fence_virtd.as_mut());
            }
            stop_group(&mut ps, libc::SIGTERM, STOP_GRACE);
        }

        // 2. qemu guests: destroy through libvirtd (all nodes in parallel),
        //    then kill leftovers by pid.
        let holders: Vec<Option<u32>> = std::mem::take(&mut *lock(&self.holders));
        let mut destroy: Vec<(u32, String)> = Vec::new();
        let mut live_holders: Vec<(usize, u32)> = Vec::new();
        for (idx, n) in g.nodes.iter_mut().enumerate() {
            let Some(h) = holders.get(idx).copied().flatten() else {
                continue;
            };
            if !n.holder.as_mut().is_some_and(|p| p.running()) {
                continue;
            }
            live_holders.push((idx + 1, h));
            if n.libvirtd.as_mut().is_some_and(|p| p.running()) {
                for (name, _) in stale::qemu_domains_of_holder(h) {
                    destroy.push((h, name));
                }
            }
        }
        if !destroy.is_empty() {
            let virsh = self.tools.virsh.to_string_lossy().into_owned();
            std::thread::scope(|s| {
                for (h, name) in &destroy {
                    let mut c = self.nsenter_cmd(*h, &[&virsh, "-c", QEMU_URI, "destroy", name]);
                    s.spawn(move || {
                        let _ = run(&mut c, Duration::from_secs(15));
                    });
                }
            });
        }
        {
            let mut left: Vec<Proc> = live_holders
                .iter()
                .flat_map(|&(i, h)| {
                    stale::qemu_pids_of_holder(h)
                        .into_iter()
                        .filter_map(move |pid| Proc::adopt_quiet(pid, &format!("qemu/n{i}")))
                })
                .collect();
            let mut ps: Vec<&mut Proc> = left.iter_mut().collect();
            for n in g.nodes.iter_mut() {
                ps.extend(n.qemu.iter_mut());
            }
            stop_group(&mut ps, libc::SIGTERM, STOP_GRACE);
        }

        // 3. corosync, libvirtd, virtlogd.
        {
            let mut ps: Vec<&mut Proc> = Vec::new();
            for n in g.nodes.iter_mut() {
                ps.extend(n.corosync.as_mut());
                ps.extend(n.keeper.as_mut());
                ps.extend(n.libvirtd.as_mut());
                ps.extend(n.virtlogd.as_mut());
            }
            stop_group(&mut ps, libc::SIGTERM, STOP_GRACE);
        }

        // 4. holders.
        {
            let mut ps: Vec<&mut Proc> = g
                .nodes
                .iter_mut()
                .filter_map(|n| n.holder.as_mut())
                .collect();
            stop_group(&mut ps, libc::SIGTERM, STOP_GRACE);
        }
        for n in g.nodes.iter_mut() {
            for p in [
                &mut n.daemon,
                &mut n.fence_virtd,
                &mut n.corosync,
                &mut n.libvirtd,
                &mut n.virtlogd,
                &mut n.holder,
            ]
            .into_iter()
            .flatten()
            {
                if p.running() {
                    problems.push(format!("{} (pid {}) survived SIGKILL", p.role, p.pid));
                }
            }
            for &pid in &n.corosync_pids {
                clean_qb_shm(pid);
            }
        }

        // 5. namespaces.
        let mut nss = g.namespaces.clone();
        for ns in stale::list_netns() {
            if ns_belongs_to(&ns, &self.prefix) && !nss.contains(&ns) {
                nss.push(ns);
            }
        }
        for ns in &nss {
            stale::del_netns(ns);
        }
        let left: Vec<String> = stale::list_netns()
            .into_iter()
            .filter(|n| ns_belongs_to(n, &self.prefix))
            .collect();
        if !left.is_empty() {
            problems.push(format!("namespaces left: {left:?}"));
        }
        kill_tmux_server(&self.prefix);
        drop(g);

        // 6. scratch dir.
        if std::env::var(KEEP_ENV).is_ok_and(|v| v == "1") {
            let _ = std::fs::write(
                self.dir.join(KEPT_MARKER),
                "torn down; kept for debugging\n",
            );
            eprintln!(
                "[sandbox] lab {} down; kept scratch dir {} ({KEEP_ENV}=1)",
                self.prefix,
                self.dir.display()
            );
        } else if let Err(e) = std::fs::remove_dir_all(&self.dir)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            problems.push(format!("removing {}: {e}", self.dir.display()));
        }
        eprintln!(
            "[sandbox] lab {} torn down in {:.1}s",
            self.prefix,
            t0.elapsed().as_secs_f64()
        );
        if problems.is_empty() {
            Ok(())
        } else {
            bail!("teardown of lab {}: {}", self.prefix, problems.join("; "))
        }
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if let Err(e) = self.down() {
            eprintln!("[sandbox] {e:#}");
        }
    }
}
