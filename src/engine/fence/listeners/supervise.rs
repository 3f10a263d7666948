//! The listeners' life: each configured listener binds on its own task and,
//! while its interface or address is not there yet (a start before libvirt
//! brought up `virbr0`), waits and retries with [`Backoff`] instead of
//! failing the daemon (fence_virtd's `-w`). Every state change goes to the
//! engine (`Input::Listeners`, shown by `status`). A reload
//! ([`ListenerSet::reload`]) replaces the permission groups in place and
//! restarts only the listeners whose settings or key changed.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use anyhow::Context;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::super::audit::AuditTx;
use super::super::guard::Guard;
use super::super::multicast::{self, MulticastSettings};
use super::super::names::{self, RequesterNames};
use super::super::perm::{PermissionGroup, Permissions};
use super::super::tcp::{self, TcpSettings};
use super::super::vsock::{self, VsockSettings};
use super::{Common, FenceService, KeySettings, ListenerSettings, load_key, warn_shared_key};
use crate::engine::InputTx;
use crate::engine::model::Input;
use fenceline_proto::api::{ListenerState, ListenerView, now_millis};
use fenceline_proto::backoff::Backoff;
use fenceline_proto::cidr::Cidr;

/// The first retry of a listener that cannot bind yet, and the slowest.
const RETRY_MIN: Duration = Duration::from_millis(500);
const RETRY_MAX: Duration = Duration::from_secs(10);
/// How long a reload waits for a replaced listener to close its socket.
const STOP_WAIT: Duration = Duration::from_secs(2);

/// One listener's settings, as far as they decide its socket.
#[derive(Debug, Clone, PartialEq)]
enum Spec {
    Multicast(MulticastSettings),
    Tcp(TcpSettings),
    Vsock(VsockSettings),
}

impl Spec {
    fn name(&self) -> &'static str {
        match self {
            Spec::Multicast(_) => "multicast",
            Spec::Tcp(_) => "tcp",
            Spec::Vsock(_) => "vsock",
        }
    }

    fn key(&self) -> &KeySettings {
        match self {
            Spec::Multicast(m) => &m.key,
            Spec::Tcp(t) => &t.key,
            Spec::Vsock(v) => &v.key,
        }
    }

    /// Where it listens, for `status` and STATUS= (`multicast@virbr0`).
    fn at(&self) -> String {
        match self {
            Spec::Multicast(m) => format!(
                "{}:{}{}",
                m.address,
                m.port,
                m.interface
                    .as_deref()
                    .map(|i| format!(" on {i}"))
                    .unwrap_or_default()
            ),
            Spec::Tcp(t) => format!("{}:{}", t.address, t.port),
            Spec::Vsock(v) => format!("port {}", v.port),
        }
    }

    fn all(cfg: &ListenerSettings) -> Vec<Spec> {
        let mut v = Vec::new();
        v.extend(cfg.multicast.clone().map(Spec::Multicast));
        v.extend(cfg.tcp.clone().map(Spec::Tcp));
        v.extend(cfg.vsock.clone().map(Spec::Vsock));
        v
    }

    /// Mistakes no waiting can fix: refused at start (and on reload).
    fn validate(&self) -> anyhow::Result<Arc<[Cidr]>> {
        match self {
            Spec::Multicast(m) => {
                let group: std::net::IpAddr = m.address.parse().with_context(|| {
                    format!(
                        "listeners.multicast.address: {:?} is not an IP address",
                        m.address
                    )
                })?;
                anyhow::ensure!(
                    group.is_multicast(),
                    "listeners.multicast.address: {group} is not a multicast address"
                );
                if let Some(i) = &m.interface {
                    // IFNAMSIZ: 15 bytes and a NUL; no '/', no spaces.
                    anyhow::ensure!(
                        !i.is_empty()
                            && i.len() < 16
                            && !i.contains(['/', ' ', '\0', ':'])
                            && i != "."
                            && i != "..",
                        "listeners.multicast.interface: {i:?} can never be an interface name"
                    );
                }
                multicast::callback_networks(m)
            }
            Spec::Tcp(t) => {
                t.address.parse::<std::net::IpAddr>().with_context(|| {
                    format!(
                        "listeners.tcp.address: {:?} is not an IP address",
                        t.address
                    )
                })?;
                Ok(Arc::from([]))
            }
            Spec::Vsock(_) => Ok(Arc::from([])),
        }
    }

    /// Waiting (the interface or address is not there yet) or another error.
    fn classify(&self, e: &anyhow::Error) -> (ListenerState, String) {
        if let Spec::Multicast(MulticastSettings {
            interface: Some(i), ..
        }) = self
            && multicast::interface_index(i).is_err()
        {
            return (ListenerState::Waiting, format!("waiting for interface {i}"));
        }
        let missing = e.chain().any(|c| {
            c.downcast_ref::<std::io::Error>()
                .and_then(|io| io.raw_os_error())
                .is_some_and(|n| n == libc::EADDRNOTAVAIL || n == libc::ENODEV)
        });
        match self {
            Spec::Tcp(t) if missing => (
                ListenerState::Waiting,
                format!("waiting for address {}", t.address),
            ),
            Spec::Multicast(_) if missing => (
                ListenerState::Waiting,
                "waiting for a multicast-capable interface".into(),
            ),
            _ => (ListenerState::Error, format!("{e:#}")),
        }
    }
}

/// The listeners' states, sent whole to the engine on every change.
#[derive(Clone)]
struct Reporter {
    states: Arc<Mutex<BTreeMap<&'static str, ListenerView>>>,
    input_tx: InputTx,
}

impl Reporter {
    fn set(&self, spec: &Spec, state: ListenerState, detail: Option<String>) -> Input {
        let mut s = self.states.lock().unwrap_or_else(PoisonError::into_inner);
        s.insert(
            spec.name(),
            ListenerView {
                name: spec.name().into(),
                at: spec.at(),
                state,
                detail,
            },
        );
        Input::Listeners {
            at: now_millis(),
            listeners: s.values().cloned().collect(),
        }
    }

    fn remove(&self, name: &str) -> Input {
        let mut s = self.states.lock().unwrap_or_else(PoisonError::into_inner);
        s.remove(name);
        Input::Listeners {
            at: now_millis(),
            listeners: s.values().cloned().collect(),
        }
    }

    async fn report(&self, spec: &Spec, state: ListenerState, detail: Option<String>) {
        let input = self.set(spec, state, detail);
        self.input_tx.send(input).await;
    }
}

/// One running listener.
struct Slot {
    spec: Spec,
    key: Arc<[u8]>,
    cancel: CancellationToken,
    task: JoinHandle<()>,
}

/// The running listeners and what a reload needs to replace them.
pub struct ListenerSet<S> {
    svc: S,
    input_tx: InputTx,
    audit: Option<AuditTx>,
    cancel: CancellationToken,
    /// One record of verified requests and challenges for the process.
    guard: Arc<Guard>,
    perms: Arc<Permissions>,
    /// The groups `perms` holds, as configured.
    groups: Vec<PermissionGroup>,
    monitor_requires_libvirt: bool,
    /// `requester_names`: the table all listeners share, and the path it
    /// was last loaded from (a reload reports a change).
    names: Arc<RequesterNames>,
    names_from: Option<PathBuf>,
    reporter: Reporter,
    slots: Vec<Slot>,
    /// Tasks of listeners a reload stopped (joined at shutdown).
    stopped: Vec<JoinHandle<()>>,
}

/// Checks and key files of every listener in `cfg`, before anything starts.
fn prepare(cfg: &ListenerSettings) -> anyhow::Result<Vec<(Spec, Arc<[u8]>)>> {
    let mut out = Vec::new();
    for spec in Spec::all(cfg) {
        spec.validate()?;
        let key = load_key(spec.name(), spec.key())?;
        out.push((spec, key));
    }
    Ok(out)
}

impl<S: FenceService> ListenerSet<S> {
    pub(super) fn start(
        cfg: &ListenerSettings,
        svc: S,
        input_tx: InputTx,
        audit: Option<AuditTx>,
        cancel: CancellationToken,
    ) -> anyhow::Result<Self> {
        let prepared = prepare(cfg)?;
        let key_of = |n: &str| prepared.iter().find(|(s, _)| s.name() == n).map(|(_, k)| k);
        warn_shared_key(key_of("multicast"), [key_of("tcp"), key_of("vsock")]);
        let mut set = ListenerSet {
            svc,
            reporter: Reporter {
                states: Arc::default(),
                input_tx: input_tx.clone(),
            },
            input_tx,
            audit,
            cancel,
            guard: Arc::new(Guard::default()),
            perms: Arc::new(Permissions::new(&cfg.groups)),
            groups: cfg.groups.clone(),
            monitor_requires_libvirt: cfg.monitor_requires_libvirt,
            names: Arc::new(RequesterNames::new(names::load(
                cfg.requester_names.as_deref(),
            ))),
            names_from: cfg.requester_names.clone(),
            slots: Vec::new(),
            stopped: Vec::new(),
        };
        if prepared.is_empty() {
            tracing::warn!(
                "no fence listener is configured ([listeners.multicast], [listeners.tcp] or \
                 [listeners.vsock]): guests cannot fence through this host"
            );
        }
        for (spec, key) in prepared {
            set.launch(spec, key);
        }
        if !set.slots.is_empty() && !set.perms.allows_all() {
            tracing::info!(groups = cfg.groups.len(), "fence permission groups active");
        }
        Ok(set)
    }

    fn launch(&mut self, spec: Spec, key: Arc<[u8]>) {
        let cancel = self.cancel.child_token();
        let mut common = Common::with_guard(
            spec.name(),
            key.clone(),
            spec.key().hash,
            spec.key().auth,
            self.perms.clone(),
            self.svc.clone(),
            self.input_tx.clone(),
            self.audit.clone(),
            cancel.clone(),
            self.guard.clone(),
        );
        if let Some(c) = Arc::get_mut(&mut common) {
            c.monitor_requires_libvirt = self.monitor_requires_libvirt;
            c.names = self.names.clone();
        }
        // Known at once, so READY=1 cannot come before the first bind.
        let first = self
            .reporter
            .set(&spec, ListenerState::Waiting, Some("starting".into()));
        self.input_tx.try_send(first);
        // The first attempt now: a listener that can bind is listening when
        // `spawn` returns.
        let bound = bind(&spec);
        let task = tokio::spawn(supervise(
            spec.clone(),
            bound,
            common,
            self.reporter.clone(),
            cancel.clone(),
        ));
        self.slots.push(Slot {
            spec,
            key,
            cancel,
            task,
        });
    }

    /// Applies new settings: permission groups in place; a listener whose
    /// settings or key file content changed is restarted, a removed one
    /// stopped, a new one started. Nothing changes when the new settings
    /// are refused (bad address, unreadable key). Returns what changed.
    pub async fn reload(&mut self, cfg: &ListenerSettings) -> anyhow::Result<Vec<String>> {
        let prepared = prepare(cfg)?;
        let mut changed = Vec::new();
        if self.groups != cfg.groups {
            self.perms.replace(&cfg.groups);
            self.groups = cfg.groups.clone();
            changed.push(format!(
                "permission groups ({} configured)",
                cfg.groups.len()
            ));
        }
        let monitor_changed = self.monitor_requires_libvirt != cfg.monitor_requires_libvirt;
        if monitor_changed {
            self.monitor_requires_libvirt = cfg.monitor_requires_libvirt;
            changed.push(format!(
                "listeners.monitor_requires_libvirt = {}",
                cfg.monitor_requires_libvirt
            ));
        }
        // The file is read again even when its path did not change: a
        // SIGHUP after editing /etc/hosts applies the new names.
        let names = names::load(cfg.requester_names.as_deref());
        if self.names_from != cfg.requester_names || *self.names.current() != names {
            changed.push(match &cfg.requester_names {
                Some(p) => format!("requester names ({} from {})", names.len(), p.display()),
                None => "requester names off".to_string(),
            });
            self.names.replace(names);
            self.names_from = cfg.requester_names.clone();
        }
        let old = std::mem::take(&mut self.slots);
        let mut keep = Vec::new();
        for slot in old {
            let same = prepared
                .iter()
                .any(|(s, k)| *s == slot.spec && k[..] == slot.key[..]);
            if same && !monitor_changed {
                keep.push(slot);
                continue;
            }
            slot.cancel.cancel();
            // Its socket closes when its task ends; the new one binds after.
            let mut task = slot.task;
            if tokio::time::timeout(STOP_WAIT, &mut task).await.is_err() {
                self.stopped.push(task);
            }
            let input = self.reporter.remove(slot.spec.name());
            self.input_tx.try_send(input);
            if !prepared.iter().any(|(s, _)| s.name() == slot.spec.name()) {
                changed.push(format!("{} listener removed", slot.spec.name()));
            }
        }
        self.slots = keep;
        for (spec, key) in prepared {
            if self.slots.iter().any(|s| s.spec.name() == spec.name()) {
                continue;
            }
            changed.push(format!(
                "{} listener (re)started at {}",
                spec.name(),
                spec.at()
            ));
            self.launch(spec, key);
        }
        self.stopped.retain(|t| !t.is_finished());
        Ok(changed)
    }
}

impl<S> IntoIterator for ListenerSet<S> {
    type Item = JoinHandle<()>;
    type IntoIter = std::vec::IntoIter<JoinHandle<()>>;

    fn into_iter(self) -> Self::IntoIter {
        let mut t = self.stopped;
        t.extend(self.slots.into_iter().map(|s| s.task));
        t.into_iter()
    }
}

/// Binds (retrying while the interface or address is missing), then runs
/// the listener until cancelled.
async fn supervise<S: FenceService>(
    spec: Spec,
    first: anyhow::Result<Bound>,
    common: Arc<Common<S>>,
    reporter: Reporter,
    cancel: CancellationToken,
) {
    let name = spec.name();
    let mut backoff = Backoff::with_entropy(RETRY_MIN, RETRY_MAX);
    let mut last: Option<String> = None;
    let mut first = Some(first);
    loop {
        match first.take().unwrap_or_else(|| bind(&spec)) {
            Ok(sock) => {
                reporter.report(&spec, ListenerState::Bound, None).await;
                if last.is_some() {
                    tracing::info!(listener = name, at = %spec.at(), "fence {name} listener bound after waiting");
                }
                log_ready(&spec);
                sock.run(&spec, common, cancel).await;
                return;
            }
            Err(e) => {
                let (state, detail) = spec.classify(&e);
                if last.as_deref() != Some(detail.as_str()) {
                    tracing::warn!(
                        listener = name, at = %spec.at(),
                        "fence {name} listener not bound: {detail}; retrying (error: {e:#})"
                    );
                    reporter.report(&spec, state, Some(detail.clone())).await;
                    last = Some(detail);
                }
            }
        }
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(backoff.next_delay()) => {}
        }
    }
}

fn bind(spec: &Spec) -> anyhow::Result<Bound> {
    match spec {
        Spec::Multicast(m) => multicast::bind(m).map(Bound::Multicast),
        Spec::Tcp(t) => tcp::bind(t).map(Bound::Tcp),
        Spec::Vsock(v) => vsock::bind(v.port).map(Bound::Vsock),
    }
}

fn log_ready(spec: &Spec) {
    let k = spec.key();
    match spec {
        Spec::Multicast(m) => {
            tracing::info!(
                group = %m.address, port = m.port, interface = m.interface.as_deref().unwrap_or("(any)"),
                hash = ?k.hash, auth = ?k.auth, "fence multicast listener ready"
            );
            if !m.callback_networks.is_empty() {
                tracing::info!(networks = %m.callback_networks.join(", "), "multicast connect-backs limited to callback_networks");
            }
        }
        Spec::Tcp(t) => {
            tracing::info!(address = %t.address, port = t.port, hash = ?k.hash, auth = ?k.auth, "fence tcp listener ready")
        }
        Spec::Vsock(v) => {
            tracing::info!(port = v.port, hash = ?k.hash, auth = ?k.auth, "fence vsock listener ready")
        }
    }
}

/// A bound socket of one kind.
enum Bound {
    Multicast(tokio::net::UdpSocket),
    Tcp(tokio::net::TcpListener),
    Vsock(vsock::VsockListener),
}

impl Bound {
    async fn run<S: FenceService>(
        self,
        spec: &Spec,
        common: Arc<Common<S>>,
        cancel: CancellationToken,
    ) {
        match self {
            Bound::Multicast(sock) => {
                // Validated before the start; never run without the limit.
                let allow = match spec {
                    Spec::Multicast(m) => multicast::callback_networks(m),
                    _ => Err(anyhow::anyhow!("not a multicast listener")),
                };
                match allow {
                    Ok(allow) => multicast::run(sock, common, allow, cancel).await,
                    Err(e) => tracing::error!("fence multicast listener not started: {e:#}"),
                }
            }
            Bound::Tcp(l) => super::super::stream::accept_loop(l, common, cancel).await,
            Bound::Vsock(l) => super::super::stream::accept_loop(l, common, cancel).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::Recorder;
    use super::*;
    use std::os::unix::fs::OpenOptionsExt;

    fn tcp(key: &std::path::Path, port: u16) -> TcpSettings {
        TcpSettings {
            address: "127.0.0.1".into(),
            port,
            key: KeySettings {
                key_file: key.to_path_buf(),
                ..Default::default()
            },
        }
    }

    fn free_port() -> u16 {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    }

    /// `cfg` restarts exactly the tcp listener, which then listens on `port`.
    async fn restarted_tcp(set: &mut ListenerSet<Recorder>, cfg: &ListenerSettings, port: u16) {
        let changed = set.reload(cfg).await.unwrap();
        assert_eq!(changed.len(), 1, "{changed:?}");
        assert!(
            changed[0].starts_with("tcp listener (re)started"),
            "{changed:?}"
        );
        tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn reload_rebinds_only_what_changed_and_refuses_a_bad_key() {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("key");
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&key)
            .unwrap();
        std::io::Write::write_all(&mut f, b"secret").unwrap();
        let (a, b) = (free_port(), free_port());
        let (itx, mut irx) = InputTx::channel(64);
        let cancel = CancellationToken::new();
        let cfg = ListenerSettings {
            tcp: Some(tcp(&key, a)),
            ..Default::default()
        };
        let mut set =
            ListenerSet::start(&cfg, Recorder::default(), itx, None, cancel.clone()).unwrap();
        // Bound when start returns.
        tokio::net::TcpStream::connect(("127.0.0.1", a))
            .await
            .unwrap();
        assert!(set.reload(&cfg).await.unwrap().is_empty());

        let groups = ListenerSettings {
            groups: vec![PermissionGroup {
                name: "g".into(),
                uuid: vec!["vm1".into()],
                ip: vec!["10.0.0.1".into()],
            }],
            ..cfg.clone()
        };
        let changed = set.reload(&groups).await.unwrap();
        assert_eq!(
            changed,
            vec!["permission groups (1 configured)".to_string()]
        );
        assert!(set.perms.may_fence("10.0.0.1", "vm2").is_err());

        let moved = ListenerSettings {
            tcp: Some(tcp(&key, b)),
            ..groups.clone()
        };
        restarted_tcp(&mut set, &moved, b).await;
        assert!(
            tokio::net::TcpStream::connect(("127.0.0.1", a))
                .await
                .is_err()
        );

        // New key content under the same path: that listener restarts.
        std::fs::write(&key, b"another secret").unwrap();
        restarted_tcp(&mut set, &moved, b).await;

        // An unreadable key refuses the whole reload; the listener stays.
        let bad = ListenerSettings {
            tcp: Some(tcp(&dir.path().join("missing"), a)),
            ..groups
        };
        assert!(set.reload(&bad).await.is_err());
        tokio::net::TcpStream::connect(("127.0.0.1", b))
            .await
            .unwrap();

        // The states reached the engine: the last report says bound at b.
        tokio::time::sleep(Duration::from_millis(100)).await;
        let mut last = None;
        while let Ok(i) = irx.try_recv() {
            if let Input::Listeners { listeners, .. } = i {
                last = Some(listeners);
            }
        }
        let last = last.unwrap();
        assert_eq!(last.len(), 1);
        assert_eq!(last[0].at, format!("127.0.0.1:{b}"));
        assert_eq!(last[0].state, ListenerState::Bound);
        cancel.cancel();
        for t in set {
            let _ = t.await;
        }
    }

    #[tokio::test]
    async fn reload_reads_the_requester_names_again() {
        let dir = tempfile::tempdir().unwrap();
        let hosts = dir.path().join("hosts");
        std::fs::write(&hosts, "10.0.0.5 g1\n").unwrap();
        let (itx, _irx) = InputTx::channel(64);
        let cancel = CancellationToken::new();
        let cfg = ListenerSettings {
            requester_names: Some(hosts.clone()),
            ..Default::default()
        };
        let mut set = ListenerSet::start(&cfg, Recorder::default(), itx, None, cancel).unwrap();
        let ip = "10.0.0.5".parse().unwrap();
        assert_eq!(set.names.label("multicast", ip), "multicast:g1 (10.0.0.5)");
        assert!(set.reload(&cfg).await.unwrap().is_empty(), "same file");
        // An edited file under the same path applies on reload.
        std::fs::write(&hosts, "10.0.0.5 guest1\n10.0.0.6 guest2\n").unwrap();
        let changed = set.reload(&cfg).await.unwrap();
        assert_eq!(
            changed,
            vec![format!("requester names (2 from {})", hosts.display())]
        );
        assert_eq!(
            set.names.label("multicast", ip),
            "multicast:guest1 (10.0.0.5)"
        );
        let off = set.reload(&ListenerSettings::default()).await.unwrap();
        assert_eq!(off, vec!["requester names off".to_string()]);
        assert_eq!(set.names.label("multicast", ip), "multicast:10.0.0.5");
    }
}
