//! Pacemaker on the lab hosts (`LabSpec.host_pacemaker`, off by default):
//! the hosts' own cluster manager, whose fencing history fenceline may
//! trust to confirm a departed host (`[fencing] pacemaker_confirm`).
//!
//! - The host holder additionally mounts tmpfs over /var/lib/pacemaker and
//!   /dev/shm, masks /proc/sysrq-trigger and binds `<node dir>/pcmk-log` on
//!   /var/log/pacemaker; corosync.conf gets `uidgid { gid: haclient }`.
//! - pacemakerd runs in the host's namespaces (`nsenter -t <holder> -m -n`)
//!   with CAP_SYS_BOOT dropped, logging to the node dir only.
//! - The CIB: `stonith-enabled=false` (no fence device; `stonith_admin
//!   --confirm NODE` records a manual fence in the history).
//! - Teardown: pacemakerd by pid, then every `pacemaker-*` process in the
//!   host's mount namespace, by pid, before the other daemons go.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, ensure};

use super::super::cmd::{CmdOutput, excerpt, run, wait_until};
use super::super::procs::{self, Proc, stop_group};
use super::guests::tool;
use super::pcmk::{self, GuestStatus};
use super::{Inner, Lab, STOP_GRACE};

const PCMK_TIMEOUT: Duration = Duration::from_secs(60);
const TOOL_TIMEOUT: Duration = Duration::from_secs(20);

/// The host holder script with Pacemaker's private state added before its
/// `echo ready`.
pub(super) fn with_pacemaker(script: &str, node_dir: &Path) -> String {
    let log = node_dir.join("pcmk-log");
    let log = log.display();
    let extra = format!(
        r#"mount -t tmpfs -o mode=0755 tmpfs /var/lib/pacemaker
mount -t tmpfs -o mode=1777 tmpfs /dev/shm
if [ -e /proc/sysrq-trigger ]; then mount --bind /dev/null /proc/sysrq-trigger; fi
mkdir -p /var/lib/pacemaker/cib /var/lib/pacemaker/pengine /var/lib/pacemaker/blackbox \
  /var/lib/pacemaker/cores /run/crm /run/resource-agents '{log}'
chown -R hacluster:haclient /var/lib/pacemaker /run/crm '{log}'
chmod 0750 /var/lib/pacemaker/cib /var/lib/pacemaker/pengine /var/lib/pacemaker/blackbox \
  /var/lib/pacemaker/cores
chmod 0770 '{log}'
mount --bind '{log}' /var/log/pacemaker
echo ready
"#
    );
    script.replacen("echo ready\n", &extra, 1)
}

impl Lab {
    /// pacemakerd on every node; waits for a DC with every node online,
    /// then turns stonith off (no device).
    pub(super) fn start_host_pacemaker(&self) -> Result<()> {
        for name in ["pacemakerd", "crm_mon", "crm_attribute", "stonith_admin"] {
            tool(name, "pacemaker pacemaker-cli-utils")?;
        }
        for i in 1..=self.spec.nodes {
            self.spawn_host_pacemakerd(i)?;
        }
        let n = self.spec.nodes;
        self.wait_host_cluster(1, "every host online with a DC", |st| {
            st.dc.is_some() && st.online.len() == n
        })?;
        let attr = tool("crm_attribute", "pacemaker-cli-utils")?;
        let o = self.exec_timeout(
            1,
            &[
                &attr,
                "--type",
                "crm_config",
                "--name",
                "stonith-enabled",
                "--update",
                "false",
            ],
            TOOL_TIMEOUT,
        )?;
        ensure!(
            o.success(),
            "node 1: crm_attribute stonith-enabled=false failed ({}): {}",
            o.status,
            excerpt(&o.stderr, 600)
        );
        Ok(())
    }

    fn spawn_host_pacemakerd(&self, i: usize) -> Result<()> {
        let pcmk = tool("pacemakerd", "pacemaker")?;
        let setpriv = tool("setpriv", "util-linux")?;
        let mut c = self.node_command(
            i,
            &[
                &setpriv,
                "--bounding-set",
                "-sys_boot",
                "--inh-caps",
                "-sys_boot",
                &pcmk,
            ],
        )?;
        c.env("PCMK_logfacility", "none")
            .env("PCMK_logfile", "/var/log/pacemaker/pacemaker.log")
            .env("PCMK_panic_action", "off")
            .env("HA_LOGFACILITY", "none")
            .env("HA_logfacility", "none");
        let log = self.node_dir(i).join("pacemakerd.out");
        let p = Proc::spawn(
            &mut c,
            &format!("pacemakerd/n{i}"),
            "pacemakerd",
            &log,
            &self.pids_file,
        )?;
        self.inner()?.nodes[i - 1].pacemakerd = Some(p);
        Ok(())
    }

    /// `crm_mon -1 --output-as=xml` on host i, parsed.
    pub fn host_pcmk_status(&self, i: usize) -> Result<GuestStatus> {
        let crm_mon = tool("crm_mon", "pacemaker-cli-utils")?;
        let o = self.exec_timeout(i, &[&crm_mon, "-1", "--output-as=xml"], TOOL_TIMEOUT)?;
        pcmk::parse_crm_mon(&o.stdout).with_context(|| {
            format!(
                "node {i}: crm_mon -1 --output-as=xml ({}): {} {}",
                o.status,
                excerpt(&o.stdout, 300),
                excerpt(&o.stderr, 300)
            )
        })
    }

    /// Polls [`Lab::host_pcmk_status`] on host i until `pred` holds.
    pub fn wait_host_cluster(
        &self,
        i: usize,
        what: &str,
        pred: impl Fn(&GuestStatus) -> bool,
    ) -> Result<()> {
        let mut last = String::new();
        let ok = wait_until(PCMK_TIMEOUT, Duration::from_millis(250), || {
            match self.host_pcmk_status(i) {
                Ok(st) => {
                    let ok = pred(&st);
                    last = format!("{st:?}");
                    ok
                }
                Err(e) => {
                    last = format!("{e:#}");
                    false
                }
            }
        });
        ensure!(
            ok,
            "node {i}: Pacemaker not {what} within {PCMK_TIMEOUT:?}: {}",
            excerpt(&last, 600)
        );
        Ok(())
    }

    /// `stonith_admin ARGS` on host i (a non-zero exit is not an error).
    pub fn host_stonith_admin(&self, i: usize, args: &[&str]) -> Result<CmdOutput> {
        let sa = tool("stonith_admin", "pacemaker-cli-utils")?;
        let mut argv = vec![sa.as_str()];
        argv.extend_from_slice(args);
        let mut c = self.node_command(i, &argv)?;
        run(&mut c, TOOL_TIMEOUT).with_context(|| format!("node {i}"))
    }

    /// Teardown of the hosts' Pacemaker: pacemakerd by pid (it respawns
    /// its children), then every `pacemaker-*` process left in each host's
    /// mount namespace, by pid.
    pub(super) fn stop_host_pacemaker(&self, inner: &mut Inner) -> Vec<String> {
        let mut problems = Vec::new();
        let mut first: Vec<&mut Proc> = inner
            .nodes
            .iter_mut()
            .filter_map(|n| n.pacemakerd.as_mut())
            .collect();
        if first.is_empty() && !self.spec.host_pacemaker {
            return problems;
        }
        stop_group(&mut first, libc::SIGKILL, STOP_GRACE);
        for n in inner.nodes.iter_mut() {
            n.pacemakerd = None;
        }
        for i in 1..=self.spec.nodes {
            let Ok(holder) = self.holder_pid(i) else {
                continue;
            };
            for _ in 0..5 {
                let mut left: Vec<Proc> = procs::pids_in_mount_ns_of(holder)
                    .into_iter()
                    .filter(|&pid| {
                        procs::program_of(pid).is_some_and(|p| p.starts_with("pacemaker"))
                    })
                    .filter_map(|pid| Proc::adopt_quiet(pid, &format!("pacemaker/n{i}")))
                    .collect();
                if left.is_empty() {
                    break;
                }
                let mut ps: Vec<&mut Proc> = left.iter_mut().collect();
                stop_group(&mut ps, libc::SIGKILL, STOP_GRACE);
                for p in ps {
                    if p.running() {
                        problems.push(format!("{} (pid {}) survived SIGKILL", p.role, p.pid));
                    }
                }
            }
        }
        problems
    }
}
