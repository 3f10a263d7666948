//! The guest Pacemaker cluster (`LabSpec.guests` = 2 or 3): the real client
//! of the fencing daemons, fencing its members through `fence_xvm`.
//!
//! - Guest g is `guest<g>`: network namespace `<P>g<g>` on the lab bridge
//!   (10.213.37.10g), and a holder in a private mount namespace with tmpfs
//!   over /run, /var/lib/pacemaker, /var/lib/corosync and /dev/shm, and
//!   `<dir>/g<g>/log` (owned by hacluster:haclient) bound on
//!   /var/log/pacemaker. corosync (cluster `<P>gst`, knet port 5420) and
//!   `pacemakerd` run inside it with `nsenter -t <holder> -m -n`.
//! - Guest g has a running test-driver domain `guest<g>` on host node
//!   [`Lab::guest_host`]; the CIB (`pcmk::guest_cib`) maps guest names to
//!   domains with `pcmk_host_map` on a `stonith:fence_xvm` device using the
//!   lab key and multicast group, and prefers the last guest for the Dummy
//!   resources, so that its failure shows recovery.
//! - Pacemaker can never reboot the machine: `fence-reaction=stop`, no
//!   watchdog, CAP_SYS_BOOT dropped from pacemakerd's bounding set and
//!   /proc/sysrq-trigger masked with /dev/null in the guests.
//! - Teardown: every process in a guest's mount namespace, by pid, then its
//!   holder; the namespaces go with the lab's.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail, ensure};

use super::super::cmd::{CmdOutput, excerpt, file_excerpt, run, wait_until};
use super::super::conf::{self, SUBNET};
use super::super::prereq::which;
use super::super::procs::{self, Proc, stop_group};
use super::corosync::parse_quorumtool;
use super::pcmk::{self, DUMMIES, FENCE_RSC, FenceEvent, GuestStatus};
use super::{Inner, Lab, STOP_GRACE, lock};

/// Host part of guest g's address: 100 + g.
const GUEST_HOST_BASE: usize = 100;
const GUEST_KNET_PORT: u16 = 5420;
/// How long the guest cluster gets to form, or to settle after a change.
const GUEST_TIMEOUT: Duration = Duration::from_secs(60);
const TOOL_TIMEOUT: Duration = Duration::from_secs(20);

/// When a guest failure (at `t0`) became visible, seen from guest 1 by
/// polling (one `stonith_admin` + one `crm_mon` per round, ~100 ms):
/// the victim unclean, its fence recorded successful, every Dummy started
/// on a survivor. `None`: not within the timeout.
#[derive(Debug, Clone, Default)]
pub struct GuestFailover {
    pub unclean: Option<Duration>,
    pub fenced: Option<Duration>,
    pub recovered: Option<Duration>,
}

/// The processes of one guest.
#[derive(Default)]
pub(super) struct Guest {
    holder: Option<Proc>,
    holder_pid: Option<u32>,
    corosync: Option<Proc>,
    pacemakerd: Option<Proc>,
}

/// What the guest holder runs inside `ip netns exec <ns> unshare -m`.
fn guest_holder_script(gdir: &Path) -> String {
    let log = gdir.join("log");
    let log = log.display();
    format!(
        r#"set -e
for m in /run /var/lib/pacemaker /dev/shm; do mount -t tmpfs -o mode=0755 tmpfs "$m"; done
if [ -d /var/lib/corosync ]; then mount -t tmpfs -o mode=0755 tmpfs /var/lib/corosync; fi
chmod 1777 /dev/shm
if [ -e /proc/sysrq-trigger ]; then mount --bind /dev/null /proc/sysrq-trigger; fi
mkdir -p /var/lib/pacemaker/cib /var/lib/pacemaker/pengine /var/lib/pacemaker/blackbox \
  /var/lib/pacemaker/cores /run/crm /run/resource-agents /run/lock '{log}'
chown -R hacluster:haclient /var/lib/pacemaker /run/crm '{log}'
chmod 0750 /var/lib/pacemaker/cib /var/lib/pacemaker/pengine /var/lib/pacemaker/blackbox \
  /var/lib/pacemaker/cores
chmod 0770 '{log}'
mount --bind '{log}' /var/log/pacemaker
echo ready
exec sleep infinity
"#
    )
}

pub(super) fn tool(name: &str, pkg: &str) -> Result<String> {
    which(name)
        .map(|p| p.to_string_lossy().into_owned())
        .ok_or_else(|| anyhow!("command `{name}` not found (Debian package: {pkg})"))
}

impl Lab {
    // ----- names ------------------------------------------------------------

    pub fn guest_count(&self) -> usize {
        self.spec.guests
    }
    /// Node name of guest g in its cluster, and name of its domain.
    pub fn guest_name(&self, g: usize) -> String {
        format!("guest{g}")
    }
    /// The host node whose libvirtd runs guest g's domain.
    pub fn guest_host(&self, g: usize) -> usize {
        (g - 1) % self.spec.nodes + 1
    }
    pub fn guest_netns(&self, g: usize) -> String {
        format!("{}g{g}", self.prefix)
    }
    pub fn guest_ip(&self, g: usize) -> String {
        format!("{SUBNET}.{}", GUEST_HOST_BASE + g)
    }
    /// Guest g's scratch dir: corosync.conf/log, `log/pacemaker.log`.
    pub fn guest_dir(&self, g: usize) -> PathBuf {
        self.dir.join(format!("g{g}"))
    }
    /// UUID of guest g's domain.
    pub fn guest_domain_uuid(&self, g: usize) -> String {
        format!("6e570000-0000-4000-8000-0000000000{g:02x}")
    }
    /// The guest whose failure the tests show: the last one. The Dummy
    /// resources prefer it.
    pub fn guest_victim(&self) -> usize {
        self.spec.guests
    }
    /// Ids of the Dummy resources.
    pub fn guest_dummies(&self) -> Vec<String> {
        (1..=DUMMIES).map(|d| format!("dummy{d}")).collect()
    }
    /// Id of the fence_xvm stonith resource.
    pub fn guest_fence_resource(&self) -> &'static str {
        FENCE_RSC
    }

    fn check_guest(&self, g: usize) -> Result<()> {
        ensure!(
            (1..=self.spec.guests).contains(&g),
            "guest {g} out of range 1..={}",
            self.spec.guests
        );
        Ok(())
    }

    fn guest_holder(&self, g: usize) -> Result<u32> {
        self.check_guest(g)?;
        let inner = self.inner()?;
        inner
            .guests
            .get(g - 1)
            .and_then(|x| x.holder_pid)
            .ok_or_else(|| anyhow!("guest {g} has no holder"))
    }

    // ----- bring-up ---------------------------------------------------------

    /// Define and start the guests' domains on their host nodes.
    pub(super) fn define_guest_domains(&self) -> Result<()> {
        for g in 1..=self.spec.guests {
            let (name, uuid) = (self.guest_name(g), self.guest_domain_uuid(g));
            self.define_test_domain(self.guest_host(g), &name, &uuid, true)
                .with_context(|| format!("domain of guest {g}"))?;
        }
        Ok(())
    }

    /// Bring up the guest cluster: namespaces, holders, corosync (waits for
    /// all members), pacemakerd (waits for a DC with every guest online), the
    /// CIB, and waits until the fence device and the Dummies are started.
    pub(super) fn start_guests(&self) -> Result<()> {
        for name in ["pacemakerd", "cibadmin", "crm_mon", "stonith_admin"] {
            tool(name, "pacemaker pacemaker-cli-utils")?;
        }
        tool("fence_xvm", "fence-virt")?;
        tool("setpriv", "util-linux")?;
        let n = self.spec.guests;
        let members: Vec<(u32, String, String)> = (1..=n)
            .map(|g| (g as u32, self.guest_name(g), self.guest_ip(g)))
            .collect();
        let totem = format!(
            "    interface {{\n        linknumber: 0\n        mcastport: {GUEST_KNET_PORT}\n    }}\n"
        );
        for g in 1..=n {
            let gd = self.guest_dir(g);
            std::fs::create_dir_all(gd.join("cs-state"))
                .with_context(|| format!("creating {}", gd.display()))?;
            let mut c = conf::corosync_conf_for(
                &format!("{}gst", self.prefix),
                &members,
                &gd,
                self.spec.token_ms,
                &totem,
            );
            // pacemaker's daemons (hacluster:haclient) talk to corosync.
            c.push_str("\nuidgid {\n    gid: haclient\n}\n");
            std::fs::write(gd.join("corosync.conf"), c).context("guest corosync.conf")?;
            let veth = format!("{}vg{g}", self.prefix);
            self.attach(&self.guest_netns(g), &veth, &self.guest_ip(g))
                .with_context(|| format!("network of guest {g}"))?;
        }
        lock(&self.inner).guests = (0..n).map(|_| Guest::default()).collect();
        for g in 1..=n {
            let log = self.guest_dir(g).join("holder.log");
            let script = guest_holder_script(&self.guest_dir(g));
            let p =
                self.spawn_holder(&self.guest_netns(g), &script, &format!("holder/g{g}"), &log)?;
            lock(&self.inner).guests[g - 1].holder = Some(p);
        }
        for g in 1..=n {
            let log = self.guest_dir(g).join("holder.log");
            let pid = self.wait_holder(&log, |i| i.guests[g - 1].holder.as_mut())?;
            lock(&self.inner).guests[g - 1].holder_pid = Some(pid);
        }
        for g in 1..=n {
            self.spawn_guest_corosync(g)?;
        }
        for g in 1..=n {
            self.wait_guest_members(g, n)?;
        }
        for g in 1..=n {
            self.spawn_pacemakerd(g)?;
        }
        self.wait_guest_cluster(1, "every guest online with a DC", |st| {
            st.dc.is_some() && st.online.len() == n
        })?;
        self.configure_guest_cib()?;
        let victim = vec![self.guest_name(self.guest_victim())];
        let home = vec![self.guest_name(1)];
        let dummies = self.guest_dummies();
        self.wait_guest_cluster(1, "fence device and Dummies started", |st| {
            st.started_on_one_of(FENCE_RSC, &home)
                && dummies.iter().all(|d| st.started_on_one_of(d, &victim))
        })?;
        Ok(())
    }

    fn spawn_guest_corosync(&self, g: usize) -> Result<()> {
        let h = self.guest_holder(g)?;
        let conf = self.guest_dir(g).join("corosync.conf");
        let cs = self.tools.corosync.to_string_lossy().into_owned();
        let mut c = self.nsenter_cmd(h, &[&cs, "-f", "-c", &conf.to_string_lossy()]);
        let log = self.guest_dir(g).join("corosync.out");
        let p = Proc::spawn(
            &mut c,
            &format!("corosync/g{g}"),
            "corosync",
            &log,
            &self.pids_file,
        )?;
        self.inner()?.guests[g - 1].corosync = Some(p);
        Ok(())
    }

    fn spawn_pacemakerd(&self, g: usize) -> Result<()> {
        let h = self.guest_holder(g)?;
        let pcmk = tool("pacemakerd", "pacemaker")?;
        let setpriv = tool("setpriv", "util-linux")?;
        let mut c = self.nsenter_cmd(
            h,
            &[
                &setpriv,
                "--bounding-set",
                "-sys_boot",
                "--inh-caps",
                "-sys_boot",
                &pcmk,
            ],
        );
        // Logs to the guest's log dir only, never to the host's syslog.
        c.env("PCMK_logfacility", "none")
            .env("PCMK_logfile", "/var/log/pacemaker/pacemaker.log")
            .env("PCMK_panic_action", "off")
            .env("HA_LOGFACILITY", "none")
            .env("HA_logfacility", "none");
        let log = self.guest_dir(g).join("pacemakerd.out");
        let p = Proc::spawn(
            &mut c,
            &format!("pacemakerd/g{g}"),
            "pacemakerd",
            &log,
            &self.pids_file,
        )?;
        self.inner()?.guests[g - 1].pacemakerd = Some(p);
        Ok(())
    }

    fn wait_guest_members(&self, g: usize, members: usize) -> Result<()> {
        let q = tool("corosync-quorumtool", "corosync")?;
        let mut last = String::new();
        let ok = wait_until(GUEST_TIMEOUT, Duration::from_millis(200), || {
            match self.guest_exec(g, &[&q, "-s"], TOOL_TIMEOUT) {
                Ok(o) => {
                    let ok = parse_quorumtool(&o.stdout).is_some_and(|i| i.nodes == members);
                    last = o.stdout;
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
            "guest {g}: corosync did not see {members} members within {GUEST_TIMEOUT:?}: {}; corosync.log: {}",
            excerpt(&last, 400),
            file_excerpt(&self.guest_dir(g).join("corosync.log"), 600)
        );
        Ok(())
    }

    fn configure_guest_cib(&self) -> Result<()> {
        let map: Vec<(String, String)> = (1..=self.spec.guests)
            .map(|g| (self.guest_name(g), self.guest_name(g)))
            .collect();
        let attr = tool("crm_attribute", "pacemaker-cli-utils")?;
        for (name, value) in pcmk::GUEST_OPTIONS {
            let o = self.guest_exec(
                1,
                &[
                    &attr,
                    "--type",
                    "crm_config",
                    "--name",
                    name,
                    "--update",
                    value,
                ],
                TOOL_TIMEOUT,
            )?;
            ensure!(
                o.success(),
                "guest 1: crm_attribute {name}={value} failed ({}): {}",
                o.status,
                excerpt(&o.stderr, 600)
            );
        }
        let (resources, constraints) = pcmk::guest_cib(
            &map,
            &self.fence_key_path(),
            &self.guest_name(1),
            &self.guest_name(self.guest_victim()),
        );
        let cib = tool("cibadmin", "pacemaker-cli-utils")?;
        for (op, scope, xml) in [
            ("--replace", "resources", &resources),
            ("--replace", "constraints", &constraints),
        ] {
            let o = self.guest_exec(
                1,
                &[&cib, op, "--scope", scope, "--xml-text", xml],
                TOOL_TIMEOUT,
            )?;
            ensure!(
                o.success(),
                "guest 1: cibadmin {op} --scope {scope} failed ({}): {}",
                o.status,
                excerpt(&format!("{}{}", o.stdout, o.stderr), 600)
            );
        }
        Ok(())
    }

    // ----- observing --------------------------------------------------------

    /// Run `argv` inside guest g (its mount + network namespaces). A
    /// non-zero exit is not an error.
    pub fn guest_exec(&self, g: usize, argv: &[&str], timeout: Duration) -> Result<CmdOutput> {
        ensure!(!argv.is_empty(), "empty argv");
        let mut c = self.nsenter_cmd(self.guest_holder(g)?, argv);
        run(&mut c, timeout).with_context(|| format!("guest {g}"))
    }

    /// `crm_mon -1 --output-as=xml` on guest g, parsed.
    pub fn guest_status(&self, g: usize) -> Result<GuestStatus> {
        let crm_mon = tool("crm_mon", "pacemaker-cli-utils")?;
        let o = self.guest_exec(g, &[&crm_mon, "-1", "--output-as=xml"], TOOL_TIMEOUT)?;
        pcmk::parse_crm_mon(&o.stdout).ok_or_else(|| {
            anyhow!(
                "guest {g}: crm_mon -1 --output-as=xml ({}): {} {}",
                o.status,
                excerpt(&o.stdout, 300),
                excerpt(&o.stderr, 300)
            )
        })
    }

    /// `stonith_admin --history <target> --verbose --output-as=xml` on guest
    /// g, parsed: every recorded fence event (without `--verbose` only the
    /// latest).
    pub fn guest_fence_history(&self, g: usize, target: &str) -> Result<Vec<FenceEvent>> {
        let sa = tool("stonith_admin", "pacemaker-cli-utils")?;
        let o = self.guest_exec(
            g,
            &[&sa, "--history", target, "--verbose", "--output-as=xml"],
            TOOL_TIMEOUT,
        )?;
        pcmk::parse_fence_history(&o.stdout).ok_or_else(|| {
            anyhow!(
                "guest {g}: stonith_admin --history {target} ({}): {} {}",
                o.status,
                excerpt(&o.stdout, 300),
                excerpt(&o.stderr, 300)
            )
        })
    }

    /// Poll [`Lab::guest_status`] on guest g every 250 ms until `pred`
    /// holds; an error with the last observation after 60 s.
    pub fn wait_guest_cluster(
        &self,
        g: usize,
        what: &str,
        pred: impl Fn(&GuestStatus) -> bool,
    ) -> Result<GuestStatus> {
        let mut last: Result<GuestStatus> = Err(anyhow!("not checked"));
        let ok = wait_until(GUEST_TIMEOUT, Duration::from_millis(250), || {
            last = self.guest_status(g);
            matches!(&last, Ok(st) if pred(st))
        });
        match last {
            Ok(st) if ok => Ok(st),
            Ok(st) => bail!(
                "guest {g}: no {what} within {GUEST_TIMEOUT:?}; last: {st:?}; pacemaker.log: {}",
                file_excerpt(&self.guest_dir(g).join("log/pacemaker.log"), 1500)
            ),
            Err(e) => Err(e.context(format!("guest {g}: waiting for {what}"))),
        }
    }

    /// Successful fences of `target` in guest g's fence history.
    pub fn guest_fence_successes(&self, g: usize, target: &str) -> Result<usize> {
        let h = self.guest_fence_history(g, target)?;
        Ok(h.iter()
            .filter(|e| e.target == target && e.status == "success")
            .count())
    }

    /// Watch the victim's failure (at `t0`) from guest 1 until its fence is
    /// recorded successful (more than `ok_before` successes) and every Dummy
    /// runs on a survivor, or `timeout` passes.
    pub fn watch_guest_failover(
        &self,
        t0: Instant,
        ok_before: usize,
        timeout: Duration,
    ) -> GuestFailover {
        let victim = self.guest_name(self.guest_victim());
        let survivors: Vec<String> = (1..self.guest_victim())
            .map(|g| self.guest_name(g))
            .collect();
        let dummies = self.guest_dummies();
        let mut out = GuestFailover::default();
        while t0.elapsed() < timeout && (out.fenced.is_none() || out.recovered.is_none()) {
            if out.fenced.is_none()
                && self
                    .guest_fence_successes(1, &victim)
                    .is_ok_and(|n| n > ok_before)
            {
                out.fenced = Some(t0.elapsed());
            }
            if let Ok(st) = self.guest_status(1) {
                if out.unclean.is_none() && st.unclean.contains(&victim) {
                    out.unclean = Some(t0.elapsed());
                }
                if out.recovered.is_none()
                    && dummies.iter().all(|d| st.started_on_one_of(d, &survivors))
                {
                    out.recovered = Some(t0.elapsed());
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        out
    }

    pub fn guest_corosync_pid(&self, g: usize) -> Option<u32> {
        self.check_guest(g).ok()?;
        let mut inner = self.inner().ok()?;
        let p = inner.guests.get_mut(g - 1)?.corosync.as_mut()?;
        p.running().then_some(p.pid)
    }

    // ----- faults -----------------------------------------------------------

    /// Send `signal` to guest g's corosync (by pid); for terminating
    /// signals wait up to 10 s for it to exit. Its pacemaker stays as it is.
    pub fn kill_guest_corosync(&self, g: usize, signal: i32) -> Result<()> {
        self.check_guest(g)?;
        let mut inner = self.inner()?;
        let slot = &mut inner.guests[g - 1].corosync;
        let Some(p) = slot.as_mut() else {
            bail!("corosync of guest {g} is not running");
        };
        ensure!(p.running(), "corosync of guest {g} is not running");
        ensure!(
            p.signal(signal),
            "corosync of guest {g} (pid {}) is gone",
            p.pid
        );
        if super::is_terminating(signal) {
            ensure!(
                p.wait_exit(Duration::from_secs(10)),
                "corosync of guest {g} (pid {}) did not exit after signal {signal}",
                p.pid
            );
            *slot = None;
        }
        Ok(())
    }

    /// Boot guest g again, as after a reboot: SIGKILL whatever still runs in
    /// it, then start corosync and pacemakerd, and wait until guest
    /// `observer` sees it online.
    pub fn restart_guest(&self, g: usize, observer: usize) -> Result<()> {
        self.check_guest(g)?;
        {
            let mut inner = self.inner()?;
            let problems = Self::kill_guest_processes(&mut inner.guests[g - 1], g);
            ensure!(problems.is_empty(), "{}", problems.join("; "));
        }
        // libqb leftovers of the killed processes, in the guest's own /dev/shm.
        let shm = PathBuf::from(format!("/proc/{}/root/dev/shm", self.guest_holder(g)?));
        if let Ok(rd) = std::fs::read_dir(&shm) {
            for e in rd.flatten() {
                if e.file_name().to_string_lossy().starts_with("qb-") {
                    let _ = std::fs::remove_file(e.path())
                        .or_else(|_| std::fs::remove_dir_all(e.path()));
                }
            }
        }
        self.spawn_guest_corosync(g)?;
        self.wait_guest_members(g, self.spec.guests)?;
        self.spawn_pacemakerd(g)?;
        let name = self.guest_name(g);
        self.wait_guest_cluster(observer, &format!("{name} online again"), |st| {
            st.online.contains(&name) && !st.unclean.contains(&name)
        })?;
        Ok(())
    }

    // ----- teardown ---------------------------------------------------------

    /// SIGKILL every process in guest `guest`'s mount namespace except its
    /// holder, by pid; the corosync and pacemakerd slots are emptied.
    /// pacemakerd goes first (it respawns its children), then whatever is
    /// left, scanning again until nothing is (at most 5 rounds).
    fn kill_guest_processes(guest: &mut Guest, g: usize) -> Vec<String> {
        let mut first: Vec<&mut Proc> = Vec::new();
        first.extend(guest.pacemakerd.as_mut());
        first.extend(guest.corosync.as_mut());
        stop_group(&mut first, libc::SIGKILL, STOP_GRACE);
        let mut problems = Vec::new();
        for p in first.iter_mut() {
            if p.running() {
                problems.push(format!("{} (pid {}) survived SIGKILL", p.role, p.pid));
            }
        }
        guest.corosync = None;
        guest.pacemakerd = None;
        let Some(holder) = guest.holder_pid else {
            return problems;
        };
        for _ in 0..5 {
            let mut left: Vec<Proc> = procs::pids_in_mount_ns_of(holder)
                .into_iter()
                .filter_map(|pid| Proc::adopt_quiet(pid, &format!("guest{g}")))
                .collect();
            if left.is_empty() {
                return problems;
            }
            let mut ps: Vec<&mut Proc> = left.iter_mut().collect();
            stop_group(&mut ps, libc::SIGKILL, STOP_GRACE);
        }
        let left = procs::pids_in_mount_ns_of(holder);
        if !left.is_empty() {
            problems.push(format!("guest {g}: processes {left:?} survived SIGKILL"));
        }
        problems
    }

    /// Teardown of every guest: its processes, then its holder.
    pub(super) fn stop_guests(inner: &mut Inner) -> Vec<String> {
        let mut problems = Vec::new();
        for (idx, guest) in inner.guests.iter_mut().enumerate() {
            problems.extend(Self::kill_guest_processes(guest, idx + 1));
        }
        let mut holders: Vec<&mut Proc> = inner
            .guests
            .iter_mut()
            .filter_map(|x| x.holder.as_mut())
            .collect();
        stop_group(&mut holders, libc::SIGTERM, STOP_GRACE);
        for h in holders.iter_mut() {
            if h.running() {
                problems.push(format!("{} (pid {}) survived SIGKILL", h.role, h.pid));
            }
        }
        inner.guests.clear();
        problems
    }
}
