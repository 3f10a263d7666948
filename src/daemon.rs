//! `fenceline daemon`: wires the state task, the drivers and the control
//! sockets together, and shuts them down in order on SIGTERM.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::engine::fence::listeners::{KeySettings, ListenerSettings};
use crate::engine::fence::multicast::MulticastSettings;
use crate::engine::fence::perm::PermissionGroup;
use crate::engine::fence::tcp::TcpSettings;
use crate::engine::fence::vsock::VsockSettings;
use crate::engine::model::{FenceRules, ModelConfig, NameMatch};
use crate::engine::{
    AuditSink, EFFECT_CAPACITY, EffectRoutes, FENCE_ACT_CAPACITY, INPUT_CAPACITY, InputTx,
    IntentSink, control, corosync, fence, hooks, libvirt, spawn_state_with,
};
use fenceline_config::{Config, FenceBackend, HashName};
use fenceline_proto::api::now_millis;
use fenceline_proto::fence_xvm::HashType;

use crate::logging::LogLevel;

/// Runs the daemon until SIGTERM or SIGINT; SIGHUP reloads the config from
/// `config_path` (and `fence_virt_conf`, when the daemon was started with one).
pub fn run(
    cfg: Config,
    config_path: Option<&Path>,
    fence_virt_conf: Option<&Path>,
) -> anyhow::Result<()> {
    let (_guard, log) = crate::logging::init(&cfg)?;
    if let Some(p) = config_path {
        crate::engine::fence::key::check_private(p, crate::engine::fence::key::Private::Config)
            .with_context(|| format!("the config file {}", p.display()))?;
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .thread_name("fenceline")
        .build()
        .context("cannot start the async runtime")?;
    let reload = (
        config_path.map(Path::to_path_buf),
        fence_virt_conf.map(Path::to_path_buf),
        log,
    );
    rt.block_on(run_async(cfg, reload))
}

async fn run_async(
    cfg: Config,
    (config_path, fence_virt_conf, log): (Option<PathBuf>, Option<PathBuf>, LogLevel),
) -> anyhow::Result<()> {
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        config = %crate::reload::describe(config_path.as_deref()),
        uris = ?cfg.libvirt.uris,
        "fenceline daemon starting"
    );
    let cancel = CancellationToken::new();
    let signals = Signals::install();
    warn_unsigned(&cfg);
    let sockets = control::server::bind_with(
        &cfg.control.socket,
        &cfg.control.readonly_socket,
        socket_access(&cfg)?,
    )
    .await
    .context("cannot open the control sockets")?;
    let hook_socket =
        hooks::intake::bind(&cfg.hooks.socket).context("cannot open the hook socket")?;

    let (eff_tx, eff_rx) = mpsc::channel(EFFECT_CAPACITY);
    let (act_tx, act_rx) = mpsc::channel(FENCE_ACT_CAPACITY);
    let model_cfg = ModelConfig {
        event_capacity: cfg.events.capacity,
        version: env!("CARGO_PKG_VERSION").to_string(),
        started_at: now_millis(),
        fence: fence_rules(&cfg),
        libvirt_uris: cfg.libvirt.uris.clone(),
        // Announced to the peers for `fenceline check` (a digest, never the
        // key); a key that cannot be read stops the listeners below anyway.
        key_digests: cfg
            .listener_keys()
            .into_iter()
            .filter_map(|(name, path)| {
                fence::key::digest_file(path, cfg.listeners.allow_loose_key_mode)
                    .ok()
                    .map(|d| (name.to_string(), d))
            })
            .collect(),
        max_peer_vms: cfg.corosync.max_peer_vms,
    };
    let (inputs, input_rx) = InputTx::channel(INPUT_CAPACITY);
    // The fence audit log: opened now so an unusable path stops the start.
    // The state task hands it every fence event.
    let audit = if cfg.fencing.audit_log.as_os_str().is_empty() {
        None
    } else {
        let w = fence::audit::spawn(&cfg.fencing.audit_log, inputs.clone()).with_context(|| {
            format!(
                "fencing.audit_log: cannot open {}",
                cfg.fencing.audit_log.display()
            )
        })?;
        tracing::info!(path = %cfg.fencing.audit_log.display(), "fence audit log open");
        Some(w)
    };
    let audit_tx = audit.as_ref().map(|w| w.tx.clone());
    let intent = audit_tx
        .clone()
        .map(|a| intent_sink(a, cfg.fencing.audit_required));
    let routes = EffectRoutes {
        corosync: eff_tx,
        fence_act: Some(act_tx),
        intent,
        audit: audit_tx.clone().map(|a| {
            Box::new(move |ev: &fenceline_proto::api::Event| {
                a.record(ev);
            }) as AuditSink
        }),
    };
    let (engine, inputs, state_task) =
        spawn_state_with(model_cfg, routes, cancel.clone(), (inputs, input_rx));

    let listener_settings = ListenerSettings::from(&cfg);
    let listeners_configured = [
        listener_settings.multicast.is_some(),
        listener_settings.tcp.is_some(),
        listener_settings.vsock.is_some(),
    ]
    .into_iter()
    .filter(|b| *b)
    .count();
    let listeners = fence::listeners::spawn(
        listener_settings,
        engine.clone(),
        inputs.clone(),
        audit_tx.clone(),
        cancel.clone(),
    )
    .context("cannot start the fence listeners")?;
    // systemd: READY=1, STATUS=, WATCHDOG=1 (only under Type=notify).
    let notify_task = crate::notify::Notifier::from_env().map(|n| {
        tokio::spawn(crate::notify::run(
            n,
            engine.clone(),
            listeners_configured,
            cancel.clone(),
        ))
    });

    let hook_task = tokio::spawn(hooks::intake::run(
        hook_socket,
        cfg.hooks.queue,
        inputs.clone(),
        cancel.clone(),
        Default::default(),
    ));
    let control_task = tokio::spawn(control::server::serve(
        sockets,
        engine.clone(),
        cancel.clone(),
    ));
    let cs_thread = corosync::spawn(
        corosync::CorosyncConfig {
            fence_group: cfg.corosync.fence_group.clone(),
            own_group: cfg.corosync.own_group.clone(),
            auth: cpg_auth(&cfg)?,
        },
        inputs.clone(),
        eff_rx,
        cancel.clone(),
    )
    .context("cannot start the corosync driver")?;
    let lv = libvirt::spawn(
        libvirt::LibvirtConfig {
            uris: cfg.libvirt.uris.clone(),
            reconcile_interval: cfg.reconcile_interval(),
        },
        inputs.clone(),
        cancel.clone(),
    )
    .context("cannot start the libvirt driver")?;
    // `[fencing] pacemaker_confirm`: the hosts' Pacemaker fencing history
    // confirms departed nodes (off by default).
    let pcmk_task = cfg.fencing.pacemaker_confirm.then(|| {
        tokio::spawn(crate::engine::pacemaker::run(
            crate::engine::pacemaker::PacemakerSettings::default(),
            engine.watch(),
            inputs.clone(),
            cancel.clone(),
        ))
    });
    let act_task = tokio::spawn(libvirt::run_fence_actions(
        lv.commander(),
        act_rx,
        inputs.clone(),
        act_timeouts(&cfg),
        cancel.clone(),
    ));

    let mut reloader = crate::reload::Reloader {
        config_path,
        fence_virt_conf,
        current: cfg,
        listeners,
        log,
        inputs,
    };
    signals.wait(&cancel, &mut reloader).await;
    tracing::info!("stopping: leaving CPG, closing libvirt connections");
    cancel.cancel();

    // Join the blocking drivers off the reactor, each with a deadline.
    let join_threads = tokio::task::spawn_blocking(move || {
        let _ = cs_thread.join();
        for t in lv.threads {
            let _ = t.join();
        }
    });
    if tokio::time::timeout(Duration::from_secs(5), join_threads)
        .await
        .is_err()
    {
        tracing::warn!("drivers did not stop within 5 s; exiting anyway");
    }
    let _ = tokio::time::timeout(Duration::from_secs(2), control_task).await;
    let _ = tokio::time::timeout(Duration::from_secs(2), act_task).await;
    for t in reloader.listeners {
        let _ = tokio::time::timeout(Duration::from_secs(2), t).await;
    }
    if let Some(t) = notify_task {
        let _ = tokio::time::timeout(Duration::from_secs(2), t).await;
    }
    let _ = tokio::time::timeout(Duration::from_secs(2), hook_task).await;
    if let Some(t) = pcmk_task {
        let _ = tokio::time::timeout(Duration::from_secs(2), t).await;
    }
    let _ = tokio::time::timeout(Duration::from_secs(2), state_task).await;
    // Every sender is gone once the tasks above ended; the writer drains
    // what is queued and stops.
    drop(audit_tx);
    if let Some(w) = audit {
        drop(w.tx);
        let join = tokio::task::spawn_blocking(move || w.thread.join());
        if tokio::time::timeout(Duration::from_secs(5), join)
            .await
            .is_err()
        {
            tracing::warn!("the audit writer did not finish within 5 s");
        }
    }
    tracing::info!("fenceline daemon stopped");
    Ok(())
}

/// How long a local fence action waits for its intent record.
const INTENT_WAIT: Duration = Duration::from_secs(2);

/// The intent record before each local fence action: a failure refuses the
/// action with `audit_required` (fail closed), else it is logged and the
/// action goes ahead (the failure is counted as a lost audit record too).
fn intent_sink(audit: fence::audit::AuditTx, required: bool) -> IntentSink {
    Box::new(move |act| {
        let write = || audit.intent(act, INTENT_WAIT);
        // Off the reactor's back when the runtime allows it.
        let r = match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
            Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(write),
            _ => write(),
        };
        match r {
            Ok(()) => Ok(()),
            Err(e) if required => Err(format!(
                "fencing.audit_required: the intent record could not be written ({e}); not acting"
            )),
            Err(e) => {
                tracing::error!(
                    "fence intent record not written ({e}); acting anyway (fencing.audit_required is off)"
                );
                Ok(())
            }
        }
    })
}

/// `[control]`'s groups, resolved: a named group that does not exist stops
/// the start; no `readonly_group` means `haclient` if it exists, else root.
fn socket_access(cfg: &Config) -> anyhow::Result<control::access::SocketAccess> {
    use control::access::group_gid;
    let named = |key: &str, name: &str| {
        group_gid(name).with_context(|| format!("control.{key}: there is no group `{name}`"))
    };
    let readonly_gid = match cfg.control.readonly_group.as_deref() {
        None => group_gid(fenceline_config::DEFAULT_READONLY_GROUP),
        Some("") => None,
        Some(name) => Some(named("readonly_group", name)?),
    };
    let admin_gid = match cfg.control.admin_group.as_deref() {
        None | Some("") => None,
        Some(name) => Some(named("admin_group", name)?),
    };
    tracing::info!(
        readonly_gid,
        admin_gid,
        "control sockets: read-write for root{}, read-only (0660) for root{}",
        if admin_gid.is_some() {
            " and admin_group"
        } else {
            ""
        },
        if readonly_gid.is_some() {
            " and its group"
        } else {
            " only"
        },
    );
    Ok(control::access::SocketAccess {
        readonly_gid,
        admin_gid,
        max_streams_per_uid: cfg.control.max_streams_per_uid,
    })
}

/// `hash` or `auth = "none"`: anyone who can reach the listener fences.
fn warn_unsigned(cfg: &Config) {
    let l = &cfg.listeners;
    let keys = [
        ("multicast", l.multicast.as_ref().map(|m| (m.hash, m.auth))),
        ("tcp", l.tcp.as_ref().map(|t| (t.hash, t.auth))),
        ("vsock", l.vsock.as_ref().map(|v| (v.hash, v.auth))),
    ];
    for (name, ha) in keys {
        let Some((hash, auth)) = ha else { continue };
        for (key, h) in [("hash", hash), ("auth", auth)] {
            if h == HashName::None {
                tracing::warn!(
                    "SECURITY: listeners.{name}.{key} = \"none\": requests on the {name} listener \
                     are not {}; anyone who can reach it can fence every VM its groups allow. \
                     Use sha256",
                    if key == "hash" {
                        "signed"
                    } else {
                        "challenged"
                    }
                );
            }
        }
    }
}

/// The router's rules from the config.
pub fn fence_rules(cfg: &Config) -> FenceRules {
    FenceRules {
        cpg: cfg.fencing.backend == FenceBackend::Cpg,
        timeout_ms: cfg.fencing.timeout_secs.saturating_mul(1000),
        reboot_timeout_ms: cfg.fencing.reboot_timeout_secs.saturating_mul(1000),
        unknown_without_quorum: cfg.fencing.unknown_vm_without_quorum,
        self_fence_ms: cfg.fencing.self_fence_secs.saturating_mul(1000),
        name_match: match cfg.libvirt.name_mode {
            fenceline_config::NameMode::Name => NameMatch::Name,
            fenceline_config::NameMode::Uuid => NameMatch::Uuid,
        },
        ..FenceRules::default()
    }
}

/// The fence listeners' settings: `[listeners.*]` and `[[groups]]`.
impl From<&Config> for ListenerSettings {
    fn from(cfg: &Config) -> Self {
        let key = |key_file: &Path, hash, auth| KeySettings {
            key_file: key_file.to_path_buf(),
            allow_loose_mode: cfg.listeners.allow_loose_key_mode,
            hash: hash_type(hash),
            auth: hash_type(auth),
        };
        let l = &cfg.listeners;
        ListenerSettings {
            multicast: l.multicast.as_ref().map(|m| MulticastSettings {
                address: m.address.clone(),
                port: m.port,
                interface: m.interface.clone(),
                key: key(&m.key_file, m.hash, m.auth),
                callback_networks: m.callback_networks.clone(),
            }),
            tcp: l.tcp.as_ref().map(|t| TcpSettings {
                address: t.address.clone(),
                port: t.port,
                key: key(&t.key_file, t.hash, t.auth),
            }),
            vsock: l.vsock.as_ref().map(|v| VsockSettings {
                port: v.port,
                key: key(&v.key_file, v.hash, v.auth),
            }),
            groups: cfg
                .groups
                .iter()
                .map(|g| PermissionGroup {
                    name: g.name.clone(),
                    uuid: g.uuid.clone(),
                    ip: g.ip.clone(),
                })
                .collect(),
            monitor_requires_libvirt: l.monitor_requires_libvirt,
            requester_names: l.requester_names.clone(),
        }
    }
}

/// fence_virt.conf's hash names as the wire's (also `fenceline check`).
pub fn hash_type(h: HashName) -> HashType {
    match h {
        HashName::None => HashType::None,
        HashName::Sha1 => HashType::Sha1,
        HashName::Sha256 => HashType::Sha256,
        HashName::Sha512 => HashType::Sha512,
    }
}

/// The acting node's limits: three quarters of the requester's wait, so the
/// reply (even a failure) reaches the requester before it gives up.
fn act_timeouts(cfg: &Config) -> libvirt::ActTimeouts {
    let q = |secs: u64| Duration::from_millis(secs.saturating_mul(750).max(1000));
    libvirt::ActTimeouts {
        op: q(cfg.fencing.timeout_secs),
        reboot: q(cfg.fencing.reboot_timeout_secs),
    }
}

/// SIGTERM, SIGINT and SIGHUP, caught from before the sockets open (a
/// SIGTERM right after the start must stop the daemon cleanly, not kill it).
struct Signals(Option<[tokio::signal::unix::Signal; 3]>);

impl Signals {
    fn install() -> Self {
        use tokio::signal::unix::{SignalKind, signal};
        match (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
            signal(SignalKind::hangup()),
        ) {
            (Ok(t), Ok(i), Ok(h)) => Self(Some([t, i, h])),
            _ => {
                tracing::error!("cannot install signal handlers; stop with SIGKILL");
                Self(None)
            }
        }
    }

    async fn wait(self, cancel: &CancellationToken, reloader: &mut crate::reload::Reloader) {
        let Some([mut term, mut int, mut hup]) = self.0 else {
            cancel.cancelled().await;
            return;
        };
        loop {
            tokio::select! {
                _ = term.recv() => { tracing::info!("SIGTERM"); return; }
                _ = int.recv() => { tracing::info!("SIGINT"); return; }
                _ = hup.recv() => reloader.reload().await,
                _ = cancel.cancelled() => return,
            }
        }
    }
}

/// `[corosync] cluster_key` and `authenticated_only` for the corosync
/// driver. The key is read like the fence key (no symlink, root's, mode
/// 0600, never loose) and must be at least 32 bytes.
fn cpg_auth(cfg: &Config) -> anyhow::Result<corosync::CpgAuth> {
    let Some(path) = &cfg.corosync.cluster_key else {
        tracing::warn!(
            "SECURITY: no corosync.cluster_key: own-group messages are not authenticated; \
             any process corosync admits to the CPG groups (uid/gid grants, e.g. haclient) \
             can speak for a node"
        );
        return Ok(corosync::CpgAuth::default());
    };
    let key = crate::engine::fence::key::read_key(path, false)
        .with_context(|| format!("corosync.cluster_key: {}", path.display()))?;
    if key.len() < fenceline_proto::seal::MIN_KEY_LEN {
        anyhow::bail!(
            "corosync.cluster_key: {} has {} bytes; use at least {} random bytes \
             (dd if=/dev/urandom of={} bs=4096 count=1)",
            path.display(),
            key.len(),
            fenceline_proto::seal::MIN_KEY_LEN,
            path.display()
        );
    }
    tracing::info!(
        path = %path.display(),
        authenticated_only = cfg.corosync.authenticated_only,
        "own-group messages are sealed with the cluster key"
    );
    Ok(corosync::CpgAuth {
        key: Some(key.into()),
        authenticated_only: cfg.corosync.authenticated_only,
    })
}
