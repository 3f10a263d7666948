//! The lab itself: the [`Lab`] handle, its spec and per-node process
//! slots, bring-up order and accessors. The rooms:
//! - `scratch`: prefix, scratch dir with its owner line, config files, key;
//! - `topology`: namespaces, bridge, veths, addresses, links, holders;
//! - `exec`: running commands inside a node (nsenter), virsh, fenceline;
//! - `corosync`: corosync start/stop and quorum observation;
//! - `libvirtd`: the private libvirtd per node, its domains and networks;
//! - `fence_virtd`: the real fence_virtd and its startup race;
//! - `daemon`: the fenceline daemon per node and its network hook;
//! - `guests`: the guest Pacemaker cluster (`LabSpec.guests`), fencing its
//!   members through `fence_xvm`; `pcmk`: its CIB and what crm_mon and
//!   stonith_admin report;
//! - `teardown`: `down`, `Drop` and the tmux server.

mod corosync;
mod daemon;
mod exec;
mod fence_virtd;
mod guests;
mod host_pcmk;
mod libvirtd;
mod pcmk;
mod scratch;
mod teardown;
#[cfg(test)]
mod tests;
mod topology;

use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail, ensure};

use super::conf::{CLIENT_HOST, QEMU_URI, SUBNET, TEST_URI};
use super::prereq::{self, which};
use super::procs::{Proc, stop_group};
use super::stale;

pub use corosync::QuorumInfo;
pub use guests::GuestFailover;
pub use libvirtd::{LabDomain, lab_domains, qemu_domain_uuid};
pub use pcmk::{FenceEvent, GuestOp, GuestResource, GuestStatus};
pub(crate) use teardown::kill_tmux_server;

/// Environment variable: when set to 1, teardown keeps the scratch directory.
pub const KEEP_ENV: &str = "FENCELINE_KEEP_LAB";

const POLL: Duration = Duration::from_millis(50);
const STOP_GRACE: Duration = Duration::from_secs(3);
const QUORUM_TIMEOUT: Duration = Duration::from_secs(30);

/// What to bring up.
#[derive(Debug, Clone)]
pub struct LabSpec {
    /// Number of cluster nodes (1..=32), named node1..nodeN, nodeids 1..N,
    /// addresses 10.213.37.1..N.
    pub nodes: usize,
    /// corosync `totem.token` in ms; 0 leaves corosync's default.
    pub token_ms: u32,
    /// fenceline binary. When set, every node not in `fence_virtd_nodes`
    /// runs `fenceline daemon`, and `Lab::fenceline` works.
    pub fenceline_bin: Option<PathBuf>,
    /// Nodes (1-based) that run the real fence_virtd (cpg backend) instead
    /// of the fenceline daemon.
    pub fence_virtd_nodes: Vec<usize>,
    /// `[libvirt] uris` of the fenceline daemons.
    pub uris: Vec<String>,
    /// Also create a client-only namespace `<P>c` (10.213.37.200) that plays a guest.
    pub client_ns: bool,
    /// Define the test-driver domains vm<i>a, vm<i>b (running) and vm<i>off.
    pub domains: bool,
    /// Fixed prefix (`[a-z][a-z0-9]{1,7}`); default: "fl" + 4 random hex digits.
    pub prefix: Option<String>,
    /// Extra TOML appended to every node's fenceline.toml.
    pub fenceline_extra_toml: String,
    /// Install fenceline's network hook (`fenceline install-hook`) into every
    /// node's private /etc/libvirt/hooks before its libvirtd starts, so the
    /// node's libvirtd runs it. Needs `fenceline_bin`.
    pub network_hooks: bool,
    /// Give every node one active libvirt network `net<i>` (qemu:///system,
    /// forward mode bridge on a bridge `<P>b<i>` inside the node; no DHCP).
    pub networks: bool,
    /// Guest Pacemaker cluster: 0 (none), 2 or 3 guests guest1..N, each in
    /// its own namespaces on the lab bridge with corosync and pacemakerd,
    /// and a running test-driver domain of the same name on host node
    /// [`Lab::guest_host`]; see `guests.rs`.
    pub guests: usize,
    /// Run Pacemaker on the lab hosts too (`host_pcmk.rs`): private
    /// /var/lib/pacemaker and /dev/shm in each host's holder, corosync's
    /// `uidgid` for haclient, pacemakerd on every node once the daemons are
    /// ready, `stonith-enabled=false` (no device: `stonith_admin --confirm`
    /// records manual fences). Off by default.
    pub host_pacemaker: bool,
}

impl Default for LabSpec {
    fn default() -> Self {
        LabSpec {
            nodes: 3,
            token_ms: 1000,
            fenceline_bin: None,
            fence_virtd_nodes: Vec::new(),
            uris: vec![TEST_URI.to_string()],
            client_ns: false,
            domains: true,
            prefix: None,
            fenceline_extra_toml: String::new(),
            network_hooks: false,
            networks: true,
            guests: 0,
            host_pacemaker: false,
        }
    }
}

impl LabSpec {
    /// 3 hosts running fenceline (`Some(bin)`) or the real fence_virtd
    /// (`None`) and a 3-guest Pacemaker cluster; no lab domains or networks.
    pub fn guest_cluster(fenceline_bin: Option<PathBuf>) -> LabSpec {
        let fence_virtd = fenceline_bin.is_none();
        LabSpec {
            fenceline_bin,
            fence_virtd_nodes: if fence_virtd {
                vec![1, 2, 3]
            } else {
                Vec::new()
            },
            guests: 3,
            domains: false,
            networks: false,
            ..LabSpec::default()
        }
    }
}

/// Absolute paths of the programs the lab runs.
#[derive(Debug, Clone)]
struct Tools {
    ip: PathBuf,
    unshare: PathBuf,
    nsenter: PathBuf,
    sh: PathBuf,
    corosync: PathBuf,
    quorumtool: PathBuf,
    libvirtd: PathBuf,
    virtlogd: PathBuf,
    virsh: PathBuf,
    fence_virtd: Option<PathBuf>,
    stdbuf: Option<PathBuf>,
}

impl Tools {
    fn find() -> Result<Tools> {
        let need = |p: &str| which(p).ok_or_else(|| anyhow!("command `{p}` not found"));
        Ok(Tools {
            ip: need("ip")?,
            unshare: need("unshare")?,
            nsenter: need("nsenter")?,
            sh: need("sh")?,
            corosync: need("corosync")?,
            quorumtool: need("corosync-quorumtool")?,
            libvirtd: need("libvirtd")?,
            virtlogd: need("virtlogd")?,
            virsh: need("virsh")?,
            fence_virtd: which("fence_virtd"),
            stdbuf: which("stdbuf"),
        })
    }
}

#[derive(Default)]
struct Node {
    holder: Option<Proc>,
    corosync: Option<Proc>,
    virtlogd: Option<Proc>,
    libvirtd: Option<Proc>,
    /// `virsh event --loop` holding a connection: libvirtd's test:///default
    /// state lives only while at least one client is connected.
    keeper: Option<Proc>,
    daemon: Option<Proc>,
    fence_virtd: Option<Proc>,
    qemu: Vec<Proc>,
    /// Every corosync pid ever started on this node (for libqb leftovers).
    corosync_pids: Vec<u32>,
    /// pacemakerd (`LabSpec.host_pacemaker`).
    pacemakerd: Option<Proc>,
}

struct Inner {
    namespaces: Vec<String>,
    nodes: Vec<Node>,
    guests: Vec<guests::Guest>,
    down: bool,
}

/// A running sandbox lab. Dropping it tears everything down.
pub struct Lab {
    prefix: String,
    dir: PathBuf,
    spec: LabSpec,
    tools: Tools,
    pids_file: PathBuf,
    /// Holder pid per node (index 0 = node 1); fixed once up.
    holders: Mutex<Vec<Option<u32>>>,
    inner: Mutex<Inner>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn is_terminating(sig: i32) -> bool {
    !matches!(
        sig,
        libc::SIGSTOP
            | libc::SIGCONT
            | libc::SIGTSTP
            | libc::SIGTTIN
            | libc::SIGTTOU
            | libc::SIGWINCH
            | 0
    )
}

impl Lab {
    /// Bring up a lab: namespaces, holders, corosync on every node (waits for
    /// a quorate N-member ring as seen from every node), a private libvirtd per
    /// node with the lab domains, fence_virtd and fenceline daemons as the
    /// spec asks (waits until each daemon's read-only socket accepts
    /// connections). On error everything created so far is torn down.
    pub fn up(spec: LabSpec) -> Result<Lab> {
        let t0 = Instant::now();
        ensure!(
            (1..=32).contains(&spec.nodes),
            "LabSpec.nodes must be 1..=32, got {}",
            spec.nodes
        );
        for &n in &spec.fence_virtd_nodes {
            ensure!(
                (1..=spec.nodes).contains(&n),
                "fence_virtd node {n} out of range 1..={}",
                spec.nodes
            );
        }
        ensure!(!spec.uris.is_empty(), "LabSpec.uris must not be empty");
        ensure!(
            spec.guests == 0 || (2..=3).contains(&spec.guests),
            "LabSpec.guests must be 0, 2 or 3, got {}",
            spec.guests
        );
        ensure!(
            !spec.network_hooks || spec.fenceline_bin.is_some(),
            "LabSpec.network_hooks needs fenceline_bin"
        );
        prereq::check_prerequisites_for(
            !spec.fence_virtd_nodes.is_empty(),
            false,
            spec.fenceline_bin.as_deref(),
        )
        .map_err(anyhow::Error::msg)?;
        let tools = Tools::find()?;
        let _ = stale::cleanup_stale();
        let (prefix, dir) = scratch::create_lab_dir(spec.prefix.as_deref())?;
        let nodes = (0..spec.nodes).map(|_| Node::default()).collect();
        let lab = Lab {
            pids_file: dir.join("pids"),
            holders: Mutex::new(vec![None; spec.nodes]),
            inner: Mutex::new(Inner {
                namespaces: Vec::new(),
                nodes,
                guests: Vec::new(),
                down: false,
            }),
            prefix,
            dir,
            spec,
            tools,
        };
        // On error `lab` is dropped here, which tears down what exists.
        lab.bring_up().with_context(|| {
            format!(
                "bringing up sandbox lab {} (scratch dir {}; set {KEEP_ENV}=1 to keep it)",
                lab.prefix,
                lab.dir.display()
            )
        })?;
        eprintln!(
            "[sandbox] lab {} up in {:.1}s: {} nodes, dir {}",
            lab.prefix,
            t0.elapsed().as_secs_f64(),
            lab.spec.nodes,
            lab.dir.display()
        );
        Ok(lab)
    }

    // ----- accessors -------------------------------------------------------

    /// The lab's unique prefix (also in every namespace and interface name).
    pub fn prefix(&self) -> &str {
        &self.prefix
    }
    /// Scratch directory `/tmp/fenceline-lab-<P>`.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
    pub fn node_count(&self) -> usize {
        self.spec.nodes
    }
    pub fn spec(&self) -> &LabSpec {
        &self.spec
    }
    /// corosync cluster name.
    pub fn cluster_name(&self) -> String {
        format!("{}clu", self.prefix)
    }
    /// Per-node scratch dir `<dir>/n<i>` (logs, configs).
    pub fn node_dir(&self, i: usize) -> PathBuf {
        self.dir.join(format!("n{i}"))
    }
    /// Network namespace name of node i.
    pub fn netns(&self, i: usize) -> String {
        format!("{}{i}", self.prefix)
    }
    /// Network namespace of the bridge.
    pub fn switch_netns(&self) -> String {
        format!("{}sw", self.prefix)
    }
    /// Client-only namespace (if `client_ns`).
    pub fn client_netns(&self) -> Option<String> {
        self.spec.client_ns.then(|| format!("{}c", self.prefix))
    }
    /// eth0 address of node i.
    pub fn node_ip(&self, i: usize) -> String {
        format!("{SUBNET}.{i}")
    }
    /// Address of the client namespace.
    pub fn client_ip(&self) -> String {
        format!("{SUBNET}.{CLIENT_HOST}")
    }
    /// The cluster key every lab node's fenceline seals its own-group
    /// messages with (`[corosync] cluster_key`, 64 random bytes, 0600).
    pub fn cluster_key_path(&self) -> PathBuf {
        self.dir.join("cluster.key")
    }
    /// fence_xvm key shared by the lab's fence_virtds (4096 random bytes, 0600).
    pub fn fence_key_path(&self) -> PathBuf {
        self.dir.join("fence_xvm.key")
    }
    /// Path of node i's fenceline daemon config.
    pub fn fenceline_config_path(&self, i: usize) -> PathBuf {
        self.node_dir(i).join("fenceline.toml")
    }
    /// A private tmux socket name (`tmux -L <this>`); its server is killed at teardown.
    pub fn tmux_socket(&self) -> String {
        format!("{}tmux", self.prefix)
    }
    /// PID of node i's holder (for `nsenter -t <pid> -m -n`).
    pub fn holder_pid(&self, i: usize) -> Result<u32> {
        self.check_node(i)?;
        // Cleared by `down`. Never lock `inner` here: callers may hold it.
        lock(&self.holders)
            .get(i - 1)
            .copied()
            .flatten()
            .ok_or_else(|| anyhow!("node {i} has no holder process (lab {})", self.prefix))
    }

    /// Human-readable summary: nodes, addresses, running programs, and how
    /// to get a shell inside a node.
    pub fn describe(&self) -> String {
        let mut s = format!(
            "sandbox lab {} (cluster {}), scratch dir {}\n",
            self.prefix,
            self.cluster_name(),
            self.dir.display()
        );
        for i in 1..=self.spec.nodes {
            let h = lock(&self.holders).get(i - 1).copied().flatten();
            let mut progs = Vec::new();
            for (name, pid) in [
                ("corosync", self.corosync_pid(i)),
                ("libvirtd", self.libvirtd_pid(i)),
                ("fenceline", self.daemon_pid(i)),
                ("fence_virtd", self.fence_virtd_pid(i)),
            ] {
                if let Some(pid) = pid {
                    progs.push(format!("{name}={pid}"));
                }
            }
            s.push_str(&format!(
                "  node{i}: netns {} ip {} [{}]  shell: nsenter -t {} -m -n bash\n",
                self.netns(i),
                self.node_ip(i),
                progs.join(" "),
                h.map(|p| p.to_string()).unwrap_or_else(|| "?".into())
            ));
        }
        if let Some(c) = self.client_netns() {
            s.push_str(&format!(
                "  client: netns {c} ip {} (ip netns exec {c} ...)\n",
                self.client_ip()
            ));
        }
        s
    }
    /// A path inside node i's mount namespace, reachable from the host
    /// (`/proc/<holder>/root/<path>`), e.g. `/run/fenceline/fenceline.sock`.
    pub fn node_path(&self, i: usize, path: &str) -> Result<PathBuf> {
        let h = self.holder_pid(i)?;
        Ok(PathBuf::from(format!("/proc/{h}/root")).join(path.trim_start_matches('/')))
    }

    fn check_node(&self, i: usize) -> Result<()> {
        ensure!(
            (1..=self.spec.nodes).contains(&i),
            "node {i} out of range 1..={}",
            self.spec.nodes
        );
        Ok(())
    }

    fn inner(&self) -> Result<MutexGuard<'_, Inner>> {
        let g = lock(&self.inner);
        ensure!(!g.down, "lab {} is torn down", self.prefix);
        Ok(g)
    }

    /// PID of the process in node i's slot `f`, if it runs.
    fn running_pid(&self, i: usize, f: impl FnOnce(&mut Node) -> &mut Option<Proc>) -> Option<u32> {
        if self.check_node(i).is_err() {
            return None;
        }
        let mut g = lock(&self.inner);
        if g.down {
            return None;
        }
        let p = f(&mut g.nodes[i - 1]).as_mut()?;
        p.running().then_some(p.pid)
    }

    /// Signal the process in a node's slot `f`; for terminating signals wait
    /// for its exit (with `force`: 5 s, then SIGKILL; else 10 s or an error).
    fn stop_proc(
        &self,
        i: usize,
        signal: i32,
        what: &str,
        f: impl FnOnce(&mut Node) -> &mut Option<Proc>,
        force: bool,
    ) -> Result<Option<ExitStatus>> {
        self.check_node(i)?;
        let mut g = self.inner()?;
        let slot = f(&mut g.nodes[i - 1]);
        let Some(p) = slot.as_mut() else {
            bail!("{what} on node {i} is not running");
        };
        if !p.running() {
            bail!("{what} on node {i} is not running");
        }
        ensure!(
            p.signal(signal),
            "{what} on node {i} (pid {}) is not running",
            p.pid
        );
        if !is_terminating(signal) {
            return Ok(None);
        }
        if !p.wait_exit(Duration::from_secs(if force { 5 } else { 10 })) {
            if force {
                stop_group(&mut [p], libc::SIGKILL, STOP_GRACE);
            } else {
                bail!(
                    "{what} on node {i} (pid {}) did not exit within 10 s after signal {signal}",
                    p.pid
                );
            }
        }
        let st = p.exit_status();
        *slot = None;
        Ok(st)
    }

    /// Everything `up` does after creating the scratch dir, in order.
    fn bring_up(&self) -> Result<()> {
        self.write_files()?;
        self.build_topology()?;
        self.start_holders()?;
        for i in 1..=self.spec.nodes {
            let mut g = self.inner()?;
            self.spawn_corosync(&mut g, i)?;
        }
        if self.spec.network_hooks {
            for i in 1..=self.spec.nodes {
                self.install_hook(i)?;
            }
        }
        for i in 1..=self.spec.nodes {
            let mut g = self.inner()?;
            self.spawn_libvirtd(&mut g, i)?;
        }
        for i in 1..=self.spec.nodes {
            self.finish_libvirtd(i)?;
        }
        // Before any fencing daemon starts, so that it sees them at once.
        self.define_guest_domains()?;
        if self.spec.networks {
            for i in 1..=self.spec.nodes {
                let (name, bridge) = (format!("net{i}"), self.bridge_name(i, "b"));
                self.define_network(i, &name, &bridge)?;
                self.virsh_uri(i, QEMU_URI, &["net-start", &name])?;
            }
        }
        for i in 1..=self.spec.nodes {
            self.wait_members(i, self.spec.nodes, QUORUM_TIMEOUT)
                .with_context(|| self.corosync_diag(i))?;
        }
        if !self.spec.fence_virtd_nodes.is_empty() {
            self.start_fence_virtds(&self.spec.fence_virtd_nodes.clone())?;
        }
        if self.spec.fenceline_bin.is_some() {
            let nodes: Vec<usize> = (1..=self.spec.nodes)
                .filter(|i| !self.spec.fence_virtd_nodes.contains(i))
                .collect();
            for &i in &nodes {
                let mut g = self.inner()?;
                self.spawn_daemon(&mut g, i)?;
            }
            for &i in &nodes {
                self.wait_daemon_ready(i)?;
            }
        }
        if self.spec.host_pacemaker {
            self.start_host_pacemaker()?;
        }
        if self.spec.guests > 0 {
            self.start_guests()?;
        }
        Ok(())
    }
}
