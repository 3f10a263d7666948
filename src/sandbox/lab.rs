//! The lab itself: namespaces, per-node holder processes and the programs
//! running inside each node.

use std::io::Read as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail, ensure};

use super::cmd::{CmdOutput, DEFAULT_TIMEOUT, excerpt, file_excerpt, run, run_checked, wait_until};
use super::conf::{
    self, CLIENT_HOST, LIBVIRT_SETUP_SOCK_DIR, LIBVIRT_SETUP_URI, QEMU_URI, SUBNET, TEST_URI,
};
use super::prereq::{self, which};
use super::procs::{self, Proc, clean_qb_shm, stop_group};
use super::stale::{self, KEPT_MARKER, OWNER_TAG, lab_dir_for, ns_belongs_to, valid_prefix};

/// Environment variable: when set to 1, teardown keeps the scratch directory.
pub const KEEP_ENV: &str = "FENCELINE_KEEP_LAB";

const POLL: Duration = Duration::from_millis(50);
const STOP_GRACE: Duration = Duration::from_secs(3);
const QUORUM_TIMEOUT: Duration = Duration::from_secs(30);
const LIBVIRTD_TIMEOUT: Duration = Duration::from_secs(20);
const DAEMON_TIMEOUT: Duration = Duration::from_secs(20);
const FENCE_VIRTD_TRIES: usize = 20;
/// fence_virtd's multicast listener port (UDP), in the hex form of /proc/net/udp.
const FENCE_VIRTD_PORT_HEX: &str = ":04CD";

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
        }
    }
}

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
}

struct Inner {
    namespaces: Vec<String>,
    nodes: Vec<Node>,
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

fn random_prefix() -> String {
    let mut b = [0u8; 2];
    let ok = std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut b))
        .is_ok();
    if !ok {
        let n = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0)
            ^ std::process::id();
        b = [(n >> 8) as u8, n as u8];
    }
    format!("fl{:02x}{:02x}", b[0], b[1])
}

/// Create the scratch dir for a new lab and write the owner line.
fn create_lab_dir(fixed: Option<&str>) -> Result<(String, PathBuf)> {
    let existing = stale::list_netns();
    for _ in 0..50 {
        let prefix = match fixed {
            Some(p) => p.to_string(),
            None => random_prefix(),
        };
        ensure!(
            valid_prefix(&prefix),
            "invalid lab prefix {prefix:?}: need 2-8 chars of [a-z0-9], starting with a letter"
        );
        let dir = lab_dir_for(&prefix);
        let taken = existing.iter().any(|n| ns_belongs_to(n, &prefix));
        if !taken {
            match std::fs::create_dir(&dir) {
                Ok(()) => {
                    let (_, start) = procs::stat(std::process::id()).unwrap_or(('R', 0));
                    std::fs::write(
                        dir.join("pids"),
                        format!("{OWNER_TAG} {} {start}\n", std::process::id()),
                    )
                    .with_context(|| format!("writing {}/pids", dir.display()))?;
                    return Ok((prefix, dir));
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(e).with_context(|| format!("creating {}", dir.display())),
            }
        }
        if fixed.is_some() {
            bail!("lab prefix {prefix} is in use (scratch dir or namespaces exist)");
        }
    }
    bail!("could not find a free lab prefix")
}

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
        let (prefix, dir) = create_lab_dir(spec.prefix.as_deref())?;
        let nodes = (0..spec.nodes).map(|_| Node::default()).collect();
        let lab = Lab {
            pids_file: dir.join("pids"),
            holders: Mutex::new(vec![None; spec.nodes]),
            inner: Mutex::new(Inner {
                namespaces: Vec::new(),
                nodes,
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

    // ----- running commands --------------------------------------------------

    fn nsenter_cmd(&self, holder: u32, argv: &[&str]) -> Command {
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

    fn fenceline_bin(&self) -> Result<&Path> {
        self.spec
            .fenceline_bin
            .as_deref()
            .ok_or_else(|| anyhow!("LabSpec.fenceline_bin is not set"))
    }

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

    // ----- bring-up ------------------------------------------------------------

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

    fn attach(&self, ns: &str, veth: &str, addr: &str) -> Result<()> {
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

    fn build_topology(&self) -> Result<()> {
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

    fn write_files(&self) -> Result<()> {
        let w = |p: PathBuf, s: &str| {
            std::fs::write(&p, s).with_context(|| format!("writing {}", p.display()))
        };
        w(self.dir.join("qemu.conf"), conf::QEMU_CONF)?;
        w(self.dir.join("libvirtd.conf"), &conf::libvirtd_conf())?;
        for i in 1..=self.spec.nodes {
            let nd = self.node_dir(i);
            std::fs::create_dir_all(nd.join("cs-state"))
                .with_context(|| format!("creating {}", nd.display()))?;
            w(
                nd.join("corosync.conf"),
                &conf::corosync_conf(
                    &self.cluster_name(),
                    self.spec.nodes,
                    &nd,
                    self.spec.token_ms,
                ),
            )?;
            w(
                nd.join("fenceline.toml"),
                &conf::fenceline_toml(
                    &self.spec.uris,
                    &nd.join("fenceline.log"),
                    &self.fence_key_path(),
                    &self.node_ip(i),
                    &self.spec.fenceline_extra_toml,
                ),
            )?;
            for d in lab_domains(i) {
                w(
                    nd.join(format!("{}.xml", d.name)),
                    &conf::test_domain_xml(&d.name, &d.uuid),
                )?;
            }
        }
        // fence_virtd and fenceline's listeners share the lab key.
        self.write_fence_key()?;
        if !self.spec.fence_virtd_nodes.is_empty() {
            let module = prereq::fence_virt_module_path()
                .ok_or_else(|| anyhow!("fence-virt plugin directory not found"))?;
            for &i in &self.spec.fence_virtd_nodes {
                w(
                    self.node_dir(i).join("fence_virt.conf"),
                    &conf::fence_virt_conf(&self.fence_key_path(), &module, TEST_URI),
                )?;
            }
        }
        Ok(())
    }

    fn write_fence_key(&self) -> Result<()> {
        let mut key = vec![0u8; 4096];
        std::fs::File::open("/dev/urandom")
            .and_then(|mut f| f.read_exact(&mut key))
            .context("reading /dev/urandom")?;
        let p = self.fence_key_path();
        std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&p)
            .and_then(|mut f| std::io::Write::write_all(&mut f, &key))
            .with_context(|| format!("writing {}", p.display()))
    }

    fn start_holders(&self) -> Result<()> {
        let script = conf::holder_script(&self.dir);
        for i in 1..=self.spec.nodes {
            let ns = self.netns(i);
            let mut c = Command::new(&self.tools.ip);
            c.args(["netns", "exec", &ns])
                .arg(&self.tools.unshare)
                .args(["-m", "--propagation", "private"])
                .arg(&self.tools.sh)
                .args(["-c", &script]);
            let log = self.node_dir(i).join("holder.log");
            let p = Proc::spawn(
                &mut c,
                &format!("holder/n{i}"),
                "sleep",
                &log,
                &self.pids_file,
            )?;
            lock(&self.inner).nodes[i - 1].holder = Some(p);
        }
        for i in 1..=self.spec.nodes {
            let log = self.node_dir(i).join("holder.log");
            let ready = wait_until(Duration::from_secs(10), Duration::from_millis(5), || {
                std::fs::read_to_string(&log).is_ok_and(|s| s.contains("ready"))
            });
            let mut g = lock(&self.inner);
            let h = g.nodes[i - 1]
                .holder
                .as_mut()
                .ok_or_else(|| anyhow!("holder of node {i} vanished"))?;
            if !ready || !h.running() {
                bail!("holder of node {i} did not get ready: {}", h.diagnose());
            }
            let pid = h.pid;
            // After "ready" the shell execs sleep; wait for that.
            wait_until(Duration::from_secs(2), Duration::from_millis(2), || {
                procs::program_of(pid).as_deref() == Some("sleep")
            });
            if let Some(slot) = lock(&self.holders).get_mut(i - 1) {
                *slot = Some(pid);
            }
        }
        Ok(())
    }

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
        Ok(())
    }

    fn corosync_diag(&self, i: usize) -> String {
        let mut g = lock(&self.inner);
        let running = g.nodes[i - 1].corosync.as_mut().map(|p| p.diagnose());
        format!(
            "corosync of node {i}: {}; corosync.log: {}",
            running.unwrap_or_else(|| "not running".into()),
            file_excerpt(&self.node_dir(i).join("corosync.log"), 600)
        )
    }

    // ----- corosync --------------------------------------------------------------

    fn spawn_corosync(&self, g: &mut Inner, i: usize) -> Result<()> {
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

    // ----- libvirtd ---------------------------------------------------------------

    fn spawn_libvirtd(&self, g: &mut Inner, i: usize) -> Result<()> {
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
    fn finish_libvirtd(&self, i: usize) -> Result<()> {
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
            let keeper = lock(&self.inner).nodes[i - 1]
                .keeper
                .as_mut()
                .map(|p| p.diagnose())
                .unwrap_or_default();
            return Err(last
                .err()
                .unwrap_or_else(|| anyhow!("timeout"))
                .context(format!(
                    "node {i}: preparing libvirtd's test driver (keeper respawned {respawns}x; {keeper})"
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
        Ok(uuid)
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

    // ----- fence_virtd ------------------------------------------------------------

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

    // ----- fenceline daemon -----------------------------------------------------

    fn spawn_daemon(&self, g: &mut Inner, i: usize) -> Result<()> {
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

    fn wait_daemon_ready(&self, i: usize) -> Result<()> {
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

    // ----- teardown ---------------------------------------------------------------

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn domains_and_uuids() {
        let d = lab_domains(2);
        assert_eq!(d[0].name, "vm2a");
        assert_eq!(d[0].uuid, "8f1e0002-0000-4000-8000-000000000011");
        assert_eq!(d[2].name, "vm2off");
        assert_eq!(d[2].uuid, "8f1e0002-0000-4000-8000-000000000019");
        assert!(!d[2].running);
        let u = qemu_domain_uuid(1, "q1");
        assert_eq!(u.len(), 36);
        assert_ne!(u, qemu_domain_uuid(1, "q2"));
    }

    #[test]
    fn quorumtool_parse() {
        let text = "Quorum information\n------------------\nDate:             Sat Nov 21 05:50:00 2026\nQuorum provider:  corosync_votequorum\nNodes:            3\nNode ID:          1\nRing ID:          1.d\nQuorate:          Yes\n\nVotequorum information\n----------------------\nExpected votes:   3\nHighest expected: 3\nTotal votes:      3\nQuorum:           2  \nFlags:            Quorate \n\nMembership information\n----------------------\n    Nodeid      Votes Name\n         1          1 node1 (local)\n         2          1 node2\n         3          1 node3\n";
        let q = parse_quorumtool(text).unwrap();
        assert!(q.quorate);
        assert_eq!(q.nodes, 3);
        assert_eq!(q.members, vec![1, 2, 3]);
        assert!(parse_quorumtool("garbage").is_none());
    }
}
