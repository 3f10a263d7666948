//! corosync driver: CPG groups `fence-agents` (fence_virtd's wire format) and
//! fenceline's own group (versioned), votequorum/quorum membership, cmap node
//! names. Dispatch runs through tokio's `AsyncFd` on a dedicated thread.
//!
//! How it works:
//! - one OS thread runs a current-thread tokio runtime; every corosync call
//!   and every callback happens on that thread;
//! - rust-corosync callbacks are plain `fn`s: they only copy their arguments
//!   into a thread-local buffer ([`PENDING`]). After each `dispatch` the
//!   driver drains the buffer, parses the messages and sends model
//!   [`Input`]s with back-pressure. Nothing calls into corosync from inside a
//!   callback (rust-corosync holds a global mutex while a callback runs);
//! - one session = two CPG handles (one per group), one quorum handle
//!   (membership + quorate), one votequorum handle (votes) and a short-lived
//!   cmap handle (cluster name, nodelist names);
//! - when corosync goes away (`dispatch` fails, usually `CsErrLibrary`), the
//!   driver reports [`Input::CorosyncDown`], drops the session and reconnects
//!   with exponential backoff (200 ms → 5 s, ±20 % jitter). Effects that
//!   arrive meanwhile are discarded: on rejoin our own join shows up as a
//!   confchg with a non-empty joined list, and the model re-announces.
//!
//! Self-delivery: CPG delivers every message back to its sender. The driver
//! forwards those like any other message (STORE_VM as
//! [`Input::PeerRecord`] with `from` = our nodeid, own-group messages as
//! [`Input::PeerMessage`]); the model ignores messages from the local node.
//! Keeping the policy in the model keeps the driver dumb and makes the echo
//! observable in tests.

pub mod fence_agents;
pub mod own;

use std::cell::RefCell;
use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::time::{Duration, Instant};

use rust_corosync::{CsError, DispatchFlags, NodeId as CsNodeId, TrackFlags};
use rust_corosync::{cmap, cpg, quorum, votequorum};
use tokio::io::Interest;
use tokio::io::unix::{AsyncFd, AsyncFdReadyGuard};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::engine::InputTx;
use crate::engine::model::{DropKind, Effect, FenceWire, Group, GroupMember, Input, VmRecord};
use fenceline_proto::api::{NodeId, now_millis};

use fence_agents::{FenceAgentsMsg, FenceReq, Frame};

/// Settings of the corosync driver.
#[derive(Debug, Clone)]
pub struct CorosyncConfig {
    /// fence_virtd's group name: `fence-agents`.
    pub fence_group: String,
    /// fenceline's own group name.
    pub own_group: String,
}

impl Default for CorosyncConfig {
    fn default() -> Self {
        Self {
            fence_group: "fence-agents".into(),
            own_group: "fenceline".into(),
        }
    }
}

/// First reconnect delay.
const RECONNECT_MIN: Duration = Duration::from_millis(200);
/// Longest reconnect delay.
const RECONNECT_MAX: Duration = Duration::from_secs(5);
/// A session that lasted this long resets the reconnect backoff.
const STABLE_SESSION: Duration = Duration::from_secs(10);
/// How long one multicast may keep retrying on `CsErrTryAgain`.
const SEND_RETRY_BUDGET: Duration = Duration::from_secs(2);
/// Retry budget while the previous send already timed out (fail fast until
/// one send succeeds again, so a burst cannot block the driver for minutes).
const SEND_RETRY_BUDGET_CONGESTED: Duration = Duration::from_millis(50);
/// Longest sleep between two `CsErrTryAgain` retries.
const SEND_RETRY_MAX_SLEEP: Duration = Duration::from_millis(100);
/// At most one warning per key in this interval; the rest are counted.
const WARN_INTERVAL: Duration = Duration::from_secs(10);
/// While one effect is sent, dispatch and forward after this many messages.
const INTERLEAVE_EVERY: usize = 64;
/// Attempts for `cpg::join` while corosync answers `CsErrTryAgain`.
const JOIN_ATTEMPTS: u32 = 20;

/// What a callback saw, copied out of corosync's buffers.
enum Raw {
    Deliver {
        group: Group,
        nodeid: NodeId,
        pid: u32,
        data: Vec<u8>,
    },
    Confchg {
        group: Group,
        members: Vec<GroupMember>,
        left: Vec<GroupMember>,
        joined: Vec<GroupMember>,
    },
    Quorum {
        quorate: bool,
        members: Vec<NodeId>,
    },
    /// votequorum reported a change: re-read the vote counts.
    VotesChanged,
}

thread_local! {
    /// Filled by the callbacks while `dispatch` runs on this thread, drained
    /// right after it. Only the driver thread ever touches its copy.
    static PENDING: RefCell<Vec<Raw>> = const { RefCell::new(Vec::new()) };
}

fn push(raw: Raw) {
    PENDING.with(|p| {
        // A callback cannot run while the driver holds the borrow (the driver
        // never dispatches while draining), so this never fails; use
        // try_borrow_mut anyway because a panic here would cross an
        // `extern "C"` frame and abort the process.
        if let Ok(mut v) = p.try_borrow_mut() {
            v.push(raw);
        }
    });
}

fn take_pending() -> Vec<Raw> {
    PENDING.with(|p| {
        p.try_borrow_mut()
            .map(|mut v| std::mem::take(&mut *v))
            .unwrap_or_default()
    })
}

/// CPG addresses as model members. corosync only sets a reason on joined
/// and left entries; member-list entries carry none (an empty string).
fn members_of(list: &[cpg::Address], with_reason: bool) -> Vec<GroupMember> {
    list.iter()
        .map(|a| GroupMember {
            nodeid: u32::from(a.nodeid),
            pid: a.pid,
            reason: if with_reason {
                a.reason.to_string()
            } else {
                String::new()
            },
        })
        .collect()
}

fn deliver(group: Group, nodeid: CsNodeId, pid: u32, msg: &[u8]) {
    push(Raw::Deliver {
        group,
        nodeid: u32::from(nodeid),
        pid,
        data: msg.to_vec(),
    });
}

fn confchg(group: Group, members: &[cpg::Address], left: &[cpg::Address], joined: &[cpg::Address]) {
    push(Raw::Confchg {
        group,
        members: members_of(members, false),
        left: members_of(left, true),
        joined: members_of(joined, true),
    });
}

// One set of callbacks per group: the fn pointer itself tells the groups
// apart, even if both groups were configured with the same name.
fn fence_deliver_cb(
    _h: &cpg::Handle,
    _g: String,
    nodeid: CsNodeId,
    pid: u32,
    msg: &[u8],
    _l: usize,
) {
    deliver(Group::FenceAgents, nodeid, pid, msg);
}

fn own_deliver_cb(_h: &cpg::Handle, _g: String, nodeid: CsNodeId, pid: u32, msg: &[u8], _l: usize) {
    deliver(Group::Own, nodeid, pid, msg);
}

fn fence_confchg_cb(
    _h: &cpg::Handle,
    _g: &str,
    members: Vec<cpg::Address>,
    left: Vec<cpg::Address>,
    joined: Vec<cpg::Address>,
) {
    confchg(Group::FenceAgents, &members, &left, &joined);
}

fn own_confchg_cb(
    _h: &cpg::Handle,
    _g: &str,
    members: Vec<cpg::Address>,
    left: Vec<cpg::Address>,
    joined: Vec<cpg::Address>,
) {
    confchg(Group::Own, &members, &left, &joined);
}

fn quorum_cb(_h: &quorum::Handle, quorate: bool, _ring: quorum::RingId, members: Vec<CsNodeId>) {
    push(Raw::Quorum {
        quorate,
        members: members.into_iter().map(u32::from).collect(),
    });
}

fn vq_expected_cb(_h: &votequorum::Handle, _ctx: u64, _expected: u32) {
    push(Raw::VotesChanged);
}

fn vq_quorum_cb(_h: &votequorum::Handle, _ctx: u64, _quorate: bool, _nodes: Vec<votequorum::Node>) {
    push(Raw::VotesChanged);
}

fn cpg_model(
    deliver_fn: fn(&cpg::Handle, String, CsNodeId, u32, &[u8], usize),
    confchg_fn: fn(&cpg::Handle, &str, Vec<cpg::Address>, Vec<cpg::Address>, Vec<cpg::Address>),
) -> cpg::ModelData {
    cpg::ModelData::ModelV1(cpg::Model1Data {
        flags: cpg::Model1Flags::None,
        deliver_fn: Some(deliver_fn),
        confchg_fn: Some(confchg_fn),
        totem_confchg_fn: None,
    })
}

/// A corosync library fd, owned by its library handle (never closed here).
struct CsFd(RawFd);

impl AsRawFd for CsFd {
    fn as_raw_fd(&self) -> RawFd {
        self.0
    }
}

fn register(fd: RawFd, what: &str) -> Result<AsyncFd<CsFd>, String> {
    // SAFETY: `fd` comes from `*_fd_get` on a live corosync handle and stays
    // open until that handle is finalized. Every AsyncFd is stored in
    // `Session` *before* (so it is dropped before) the handle that owns its
    // fd, and `connect` declares the locals in the same order, so the fd is
    // valid and unchanged for the whole life of the AsyncFd.
    unsafe { AsyncFd::register_with_interest(CsFd(fd), Interest::READABLE) }
        .map_err(|e| format!("cannot register the {what} fd with tokio: {e}"))
}

/// One connection to corosync.
///
/// Field order is drop order: the `AsyncFd`s must go before the handles
/// whose fds they watch (a handle's `Drop` finalizes it and closes the fd).
struct Session {
    fence_fd: AsyncFd<CsFd>,
    own_fd: AsyncFd<CsFd>,
    quorum_fd: AsyncFd<CsFd>,
    vq_fd: Option<AsyncFd<CsFd>>,
    fence: cpg::Handle,
    own: cpg::Handle,
    quorum: quorum::Handle,
    vq: Option<votequorum::Handle>,
    local: NodeId,
    /// Largest message CPG sends without fragmenting (logged only).
    max_msg: Option<u32>,
}

/// What `connect` learned besides the session.
struct UpInfo {
    cluster_name: Option<String>,
    nodelist: Vec<(NodeId, Option<String>)>,
}

/// What woke the main loop.
enum Wake {
    Cancel,
    Dispatched(Result<(), String>),
    Effect(Effect),
    EffectsClosed,
}

/// Why the session ended.
enum End {
    /// Cancelled, or the engine is gone: leave cleanly and stop.
    Stop,
    /// corosync went away: reconnect.
    Lost(String),
}

/// Why a multicast failed.
enum SendError {
    /// Still `CsErrTryAgain` after the retry budget, or a per-message error.
    Dropped(String),
    /// The connection is gone.
    Lost(String),
}

/// Rate limit for warnings: at most one per key per [`WARN_INTERVAL`].
#[derive(Default)]
struct WarnLimiter {
    last: HashMap<(u8, NodeId), (Instant, u64)>,
}

/// `Group` is not `Hash`; a small stable key instead.
fn group_key(g: Group) -> u8 {
    match g {
        Group::FenceAgents => 0,
        Group::Own => 1,
    }
}

impl WarnLimiter {
    /// Returns `Some(suppressed_since_last)` when a warning may be logged now.
    fn allow(&mut self, group: Group, from: NodeId) -> Option<u64> {
        let now = Instant::now();
        match self.last.entry((group_key(group), from)) {
            Entry::Vacant(v) => {
                v.insert((now, 0));
                Some(0)
            }
            Entry::Occupied(mut o) => {
                let (when, suppressed) = o.get_mut();
                if now.duration_since(*when) >= WARN_INTERVAL {
                    let n = *suppressed;
                    *when = now;
                    *suppressed = 0;
                    Some(n)
                } else {
                    *suppressed += 1;
                    None
                }
            }
        }
    }
}

/// xorshift64* for reconnect jitter (no need for a crypto RNG).
struct Jitter(u64);

impl Jitter {
    fn new() -> Self {
        let seed =
            u64::from(std::process::id()) ^ now_millis().rotate_left(17) ^ 0x9e37_79b9_7f4a_7c15;
        Jitter(seed | 1)
    }

    /// `d` scaled by a factor in [0.8, 1.2).
    fn apply(&mut self, d: Duration) -> Duration {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        let r = self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 11; // 53 bits
        let unit = r as f64 / (1u64 << 53) as f64;
        d.mul_f64(0.8 + 0.4 * unit)
    }
}

struct Driver {
    cfg: CorosyncConfig,
    inputs: InputTx,
    effects: mpsc::Receiver<Effect>,
    cancel: CancellationToken,
    malformed_warn: WarnLimiter,
    /// Rate limit for STORE_VM records fence_virtd's format cannot carry.
    encode_warn: WarnLimiter,
    /// The last `CorosyncDown` error sent (repeats are not re-sent).
    last_down: Option<String>,
    /// Members of the last quorum notification (for the vote total).
    quorum_members: Vec<NodeId>,
    last_votes: Option<(u32, u32, u32)>,
    /// Set when a multicast exhausted its retry budget; cleared on success.
    congested: bool,
    jitter: Jitter,
}

/// Starts the driver on its own thread.
pub fn spawn(
    cfg: CorosyncConfig,
    inputs: InputTx,
    effects: mpsc::Receiver<Effect>,
    cancel: CancellationToken,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .thread_name("corosync")
        .build()?;
    std::thread::Builder::new()
        .name("corosync".into())
        .spawn(move || {
            let driver = Driver {
                cfg,
                inputs,
                effects,
                cancel,
                malformed_warn: WarnLimiter::default(),
                encode_warn: WarnLimiter::default(),
                last_down: None,
                quorum_members: Vec::new(),
                last_votes: None,
                congested: false,
                jitter: Jitter::new(),
            };
            rt.block_on(driver.run());
        })
}

impl Driver {
    async fn run(mut self) {
        tracing::info!(
            fence_group = %self.cfg.fence_group,
            own_group = %self.cfg.own_group,
            "corosync driver starting"
        );
        let mut delay = RECONNECT_MIN;
        loop {
            if self.cancel.is_cancelled() {
                break;
            }
            match self.connect().await {
                Ok((session, up)) => {
                    self.last_down = None;
                    let started = Instant::now();
                    match self.serve(session, up).await {
                        End::Stop => break,
                        End::Lost(error) => {
                            tracing::warn!(%error, "corosync connection lost; reconnecting");
                            if !self.report_down(error).await {
                                break;
                            }
                        }
                    }
                    // A session that lived a while resets the backoff; one
                    // that died at once keeps growing it (no flapping loop).
                    if started.elapsed() >= STABLE_SESSION {
                        delay = RECONNECT_MIN;
                    }
                }
                Err(error) => {
                    if self.cancel.is_cancelled() {
                        break;
                    }
                    if self.last_down.as_deref() != Some(error.as_str()) {
                        tracing::warn!(%error, "cannot connect to corosync; will retry");
                    } else {
                        tracing::debug!(%error, "corosync still unreachable");
                    }
                    if !self.report_down(error).await {
                        break;
                    }
                }
            }
            if !self.backoff(delay).await {
                break;
            }
            delay = (delay * 2).min(RECONNECT_MAX);
        }
        tracing::info!("corosync driver stopped");
    }

    /// Sends `CorosyncDown` unless the same error was the last one sent.
    /// Returns false when the engine is gone.
    async fn report_down(&mut self, error: String) -> bool {
        if self.last_down.as_deref() == Some(error.as_str()) {
            return true;
        }
        self.last_down = Some(error.clone());
        self.last_votes = None;
        self.quorum_members.clear();
        self.inputs
            .send(Input::CorosyncDown {
                at: now_millis(),
                error,
            })
            .await
    }

    /// Waits `delay` (with jitter) while discarding effects. Returns false
    /// when the driver must stop.
    async fn backoff(&mut self, delay: Duration) -> bool {
        let sleep = tokio::time::sleep(self.jitter.apply(delay));
        tokio::pin!(sleep);
        let cancel = self.cancel.clone();
        let mut discarded = 0u64;
        let keep_going = loop {
            tokio::select! {
                _ = cancel.cancelled() => break false,
                _ = &mut sleep => break true,
                e = self.effects.recv() => match e {
                    Some(_) => discarded += 1,
                    None => break false,
                },
            }
        };
        if discarded > 0 {
            tracing::debug!(discarded, "discarded effects while corosync is down");
        }
        keep_going
    }

    /// Opens all handles, joins both groups and registers the fds.
    async fn connect(&mut self) -> Result<(Session, UpInfo), String> {
        // Locals are declared handle-first so that on an early return the
        // AsyncFds (declared later) are dropped before the handles.
        let fence = cpg::initialize(&cpg_model(fence_deliver_cb, fence_confchg_cb), 0)
            .map_err(|e| format!("cpg_initialize: {e}"))?;
        let local = cpg::local_get(&fence)
            .map(u32::from)
            .map_err(|e| format!("cpg_local_get: {e}"))?;
        let own = cpg::initialize(&cpg_model(own_deliver_cb, own_confchg_cb), 0)
            .map_err(|e| format!("cpg_initialize: {e}"))?;
        let (quorum, _qtype) = quorum::initialize(
            &quorum::ModelData::ModelV1(quorum::Model1Data {
                flags: quorum::Model1Flags::None,
                quorum_notification_fn: Some(quorum_cb),
                nodelist_notification_fn: None,
            }),
            0,
        )
        .map_err(|e| format!("quorum_initialize: {e}"))?;
        // CS_TRACK_CHANGES also makes corosync send the current state right
        // away, so the first dispatch yields the initial quorum state.
        quorum::trackstart(&quorum, TrackFlags::Changes)
            .map_err(|e| format!("quorum_trackstart: {e}"))?;
        let vq = match votequorum::initialize(&votequorum::Callbacks {
            quorum_notification_fn: Some(vq_quorum_cb),
            nodelist_notification_fn: None,
            expectedvotes_notification_fn: Some(vq_expected_cb),
        }) {
            Ok(h) => match votequorum::trackstart(&h, 0, TrackFlags::Changes) {
                Ok(()) => Some(h),
                Err(e) => {
                    tracing::warn!(error = %e, "votequorum_trackstart failed; vote counts unavailable");
                    None
                }
            },
            Err(e) => {
                tracing::warn!(error = %e, "votequorum unavailable (no votequorum provider?); vote counts unavailable");
                None
            }
        };
        let up = read_cmap().unwrap_or_else(|e| {
            tracing::warn!(error = %e, "cannot read cluster name and nodelist from cmap");
            UpInfo {
                cluster_name: None,
                nodelist: Vec::new(),
            }
        });
        let max_msg = cpg::max_atomic_msgsize_get(&fence).ok();

        let fence_fd = register(
            cpg::fd_get(&fence).map_err(|e| format!("cpg_fd_get: {e}"))?,
            "cpg",
        )?;
        let own_fd = register(
            cpg::fd_get(&own).map_err(|e| format!("cpg_fd_get: {e}"))?,
            "cpg",
        )?;
        let quorum_fd = register(
            quorum::fd_get(&quorum).map_err(|e| format!("quorum_fd_get: {e}"))?,
            "quorum",
        )?;
        let vq_fd = match &vq {
            Some(h) => Some(register(
                votequorum::fd_get(h).map_err(|e| format!("votequorum_fd_get: {e}"))?,
                "votequorum",
            )?),
            None => None,
        };

        self.join(&fence, &self.cfg.fence_group).await?;
        self.join(&own, &self.cfg.own_group).await?;

        let session = Session {
            fence_fd,
            own_fd,
            quorum_fd,
            vq_fd,
            fence,
            own,
            quorum,
            vq,
            local,
            max_msg,
        };
        Ok((session, up))
    }

    async fn join(&self, h: &cpg::Handle, group: &str) -> Result<(), String> {
        let mut wait = Duration::from_millis(10);
        for _ in 0..JOIN_ATTEMPTS {
            match cpg::join(h, group) {
                Ok(()) => return Ok(()),
                Err(CsError::CsErrTryAgain) => {
                    tokio::select! {
                        _ = self.cancel.cancelled() => return Err("cancelled".into()),
                        _ = tokio::time::sleep(wait) => {}
                    }
                    wait = (wait * 2).min(Duration::from_millis(200));
                }
                Err(e) => return Err(format!("cpg_join({group}): {e}")),
            }
        }
        Err(format!("cpg_join({group}): still busy (ErrTryAgain)"))
    }

    /// Runs one connected session until corosync is lost or we must stop.
    async fn serve(&mut self, s: Session, up: UpInfo) -> End {
        tracing::info!(
            local_nodeid = s.local,
            pid = std::process::id(),
            cluster = up.cluster_name.as_deref().unwrap_or("?"),
            nodes = up.nodelist.len(),
            max_msg = ?s.max_msg,
            votequorum = s.vq.is_some(),
            "connected to corosync; joined {} and {}",
            self.cfg.fence_group,
            self.cfg.own_group
        );
        // Callbacks only run inside dispatch, so CorosyncUp precedes every
        // GroupChange/Quorum/message of this session.
        let _ = take_pending();
        let sent = self
            .inputs
            .send(Input::CorosyncUp {
                at: now_millis(),
                local_nodeid: s.local,
                cluster_name: up.cluster_name,
                nodelist: up.nodelist,
            })
            .await;
        if !sent {
            return self.close(s, "engine gone");
        }
        if !self.refresh_votes(&s).await {
            return self.close(s, "engine gone");
        }
        let cancel = self.cancel.clone();
        loop {
            let wake = tokio::select! {
                _ = cancel.cancelled() => Wake::Cancel,
                r = s.fence_fd.readable() => Wake::Dispatched(dispatch_cpg(r, &s.fence)),
                r = s.own_fd.readable() => Wake::Dispatched(dispatch_cpg(r, &s.own)),
                r = s.quorum_fd.readable() => Wake::Dispatched(dispatch_with(r, "quorum", || {
                    quorum::dispatch(&s.quorum, DispatchFlags::All)
                })),
                r = readable_opt(s.vq_fd.as_ref()) => Wake::Dispatched(match &s.vq {
                    Some(h) => dispatch_with(r, "votequorum", || votequorum::dispatch(h, DispatchFlags::All)),
                    None => Ok(()),
                }),
                e = self.effects.recv() => match e {
                    Some(e) => Wake::Effect(e),
                    None => Wake::EffectsClosed,
                },
            };
            let outcome = match wake {
                Wake::Cancel => return self.close(s, "shutdown requested"),
                Wake::EffectsClosed => return self.close(s, "engine gone"),
                Wake::Dispatched(r) => r,
                Wake::Effect(e) => self.apply_effect(&s, e).await,
            };
            // Whatever the callbacks collected (also during send retries).
            if !self.forward_pending(&s).await {
                return self.close(s, "engine gone");
            }
            if let Err(error) = outcome {
                let _ = take_pending();
                drop(s);
                return End::Lost(error);
            }
        }
    }

    /// Leaves both groups and finalizes every handle (by dropping them).
    fn close(&self, s: Session, why: &str) -> End {
        tracing::info!(
            reason = why,
            "leaving CPG groups and closing corosync handles"
        );
        if let Err(e) = cpg::leave(&s.fence, &self.cfg.fence_group) {
            tracing::debug!(error = %e, group = %self.cfg.fence_group, "cpg_leave failed");
        }
        if let Err(e) = cpg::leave(&s.own, &self.cfg.own_group) {
            tracing::debug!(error = %e, group = %self.cfg.own_group, "cpg_leave failed");
        }
        let _ = quorum::trackstop(&s.quorum);
        if let Some(h) = &s.vq {
            let _ = votequorum::trackstop(h);
        }
        drop(s);
        let _ = take_pending();
        End::Stop
    }

    /// Turns the buffered callback data into inputs. Returns false when the
    /// engine is gone.
    async fn forward_pending(&mut self, s: &Session) -> bool {
        let raws = take_pending();
        if raws.is_empty() {
            return true;
        }
        let mut votes_dirty = false;
        for raw in raws {
            let at = now_millis();
            let input = match raw {
                Raw::Deliver {
                    group: Group::FenceAgents,
                    nodeid,
                    pid,
                    data,
                } => match fence_agents::parse(&data) {
                    Ok(frame) => fence_agents_input(at, nodeid, pid, frame),
                    Err(e) => {
                        Some(self.malformed(at, Group::FenceAgents, nodeid, pid, e.to_string()))
                    }
                },
                Raw::Deliver {
                    group: Group::Own,
                    nodeid,
                    pid,
                    data,
                } => match own::parse(&data) {
                    Ok(msg) => Some(Input::PeerMessage {
                        at,
                        from: nodeid,
                        msg,
                    }),
                    Err(e) => Some(self.malformed(at, Group::Own, nodeid, pid, e.to_string())),
                },
                Raw::Confchg {
                    group,
                    members,
                    left,
                    joined,
                } => {
                    tracing::info!(
                        group = ?group,
                        members = %fmt_members(&members),
                        joined = %fmt_members(&joined),
                        left = %fmt_members(&left),
                        "CPG membership change"
                    );
                    Some(Input::GroupChange {
                        at,
                        group,
                        members,
                        left,
                        joined,
                    })
                }
                Raw::Quorum { quorate, members } => {
                    tracing::info!(quorate, members = ?members, "quorum notification");
                    self.quorum_members.clone_from(&members);
                    votes_dirty = true;
                    Some(Input::Quorum {
                        at,
                        quorate,
                        members,
                    })
                }
                Raw::VotesChanged => {
                    votes_dirty = true;
                    None
                }
            };
            if let Some(input) = input
                && !self.inputs.send(input).await
            {
                return false;
            }
        }
        if votes_dirty {
            return self.refresh_votes(s).await;
        }
        true
    }

    fn malformed(
        &mut self,
        at: u64,
        group: Group,
        from: NodeId,
        pid: u32,
        reason: String,
    ) -> Input {
        if let Some(suppressed) = self.malformed_warn.allow(group, from) {
            tracing::warn!(
                group = ?group,
                from,
                pid,
                suppressed,
                %reason,
                "malformed CPG message dropped"
            );
        }
        Input::Malformed {
            at,
            group,
            from,
            reason,
        }
    }

    /// Reads the vote counts and sends `Input::Votes` when they changed.
    async fn refresh_votes(&mut self, s: &Session) -> bool {
        let Some(vq) = &s.vq else { return true };
        let members = if self.quorum_members.is_empty() {
            vec![s.local]
        } else {
            self.quorum_members.clone()
        };
        let Some(votes) = read_votes(vq, s.local, &members) else {
            return true;
        };
        if self.last_votes == Some(votes) {
            return true;
        }
        self.last_votes = Some(votes);
        let (expected, total, quorum) = votes;
        tracing::debug!(expected, total, quorum, "votequorum");
        self.inputs
            .send(Input::Votes {
                at: now_millis(),
                expected,
                total,
                quorum,
            })
            .await
    }

    /// Multicasts one effect. `Err` only when the connection is lost.
    async fn apply_effect(&mut self, s: &Session, effect: Effect) -> Result<(), String> {
        // A fence REQUEST that cannot go out fails its caller at once.
        let mut fence_seqno = None;
        let (handle, group, messages) = match effect {
            Effect::FenceCpgRequest { seqno, body } => {
                fence_seqno = Some(seqno);
                let frame = Frame {
                    seqno,
                    target: fence_agents::NODE_ID_NONE,
                    msg: FenceAgentsMsg::Request(fence_req(body)),
                };
                match fence_agents::encode(&frame) {
                    Ok(b) => (&s.fence, Group::FenceAgents, vec![b]),
                    Err(e) => return self.fence_send_failed(seqno, e.to_string()).await,
                }
            }
            Effect::FenceCpgReply {
                seqno,
                target,
                body,
            } => {
                let frame = Frame {
                    seqno,
                    target,
                    msg: FenceAgentsMsg::Reply(fence_req(body)),
                };
                match fence_agents::encode(&frame) {
                    Ok(b) => (&s.fence, Group::FenceAgents, vec![b]),
                    Err(e) => {
                        tracing::error!(error = %e, seqno, target, "cannot encode a fence REPLY; dropped");
                        return Ok(());
                    }
                }
            }
            Effect::FenceAct(_) | Effect::FenceDone { .. } => {
                tracing::error!("a fence effect was routed to the corosync driver; ignored");
                return Ok(());
            }
            Effect::StoreVms(records) => {
                (&s.fence, Group::FenceAgents, self.encode_stores(records))
            }
            Effect::Own(msg) => match own::encode_chunked(&msg, own::DEFAULT_CHUNK) {
                Ok(m) => (&s.own, Group::Own, m),
                Err(e) => {
                    tracing::error!(error = %e, "cannot encode own-group message; dropped");
                    return self.report_dropped().await;
                }
            },
        };
        for (i, bytes) in messages.iter().enumerate() {
            // Keep reading while a long effect goes out, so corosync's queue
            // towards us never backs up behind our own sends.
            if i > 0 && i % INTERLEAVE_EVERY == 0 {
                dispatch_all(s)?;
                if !self.forward_pending(s).await {
                    return Ok(()); // engine gone: the main loop stops next
                }
            }
            match self.mcast(s, handle, bytes).await {
                Ok(()) => {}
                Err(SendError::Lost(e)) => {
                    if let Some(seqno) = fence_seqno {
                        let _ = self.fence_send_failed(seqno, e.clone()).await;
                    }
                    return Err(e);
                }
                Err(SendError::Dropped(e)) if fence_seqno.is_some() => {
                    return self.fence_send_failed(fence_seqno.unwrap_or(0), e).await;
                }
                Err(SendError::Dropped(e)) => {
                    tracing::warn!(
                        group = ?group,
                        error = %e,
                        dropped = messages.len() - i,
                        "cannot multicast; dropping the rest of this effect"
                    );
                    return self.report_dropped().await;
                }
            }
        }
        Ok(())
    }

    async fn fence_send_failed(&mut self, seqno: u32, error: String) -> Result<(), String> {
        tracing::warn!(seqno, %error, "cannot send a fence REQUEST");
        let sent = self
            .inputs
            .send(Input::FenceSendFailed {
                at: now_millis(),
                seqno,
                error,
            })
            .await;
        if sent {
            Ok(())
        } else {
            Err("engine gone".into())
        }
    }

    async fn report_dropped(&mut self) -> Result<(), String> {
        let sent = self
            .inputs
            .send(Input::Dropped {
                at: now_millis(),
                what: DropKind::Effects,
                count: 1,
            })
            .await;
        if sent {
            Ok(())
        } else {
            Err("engine gone".into())
        }
    }

    /// One STORE_VM per record, in fence_virtd's exact format. Records the
    /// format cannot carry (names too long) are skipped with a warning.
    fn encode_stores(&mut self, records: Vec<VmRecord>) -> Vec<Vec<u8>> {
        let mut out = Vec::with_capacity(records.len());
        for rec in records {
            let name = rec.name.clone();
            match fence_agents::encode(&Frame::store_vm(rec)) {
                Ok(b) => out.push(b),
                Err(e) => {
                    if let Some(suppressed) = self.encode_warn.allow(Group::FenceAgents, 0) {
                        tracing::warn!(
                            vm = %name,
                            error = %e,
                            suppressed,
                            "VM cannot be announced in fence_virtd's format; skipped"
                        );
                    }
                }
            }
        }
        out
    }

    /// `cpg_mcast_joined` with bounded retries on `CsErrTryAgain` (flow
    /// control). Between attempts every handle is dispatched so corosync can
    /// drain its queues towards us; what the callbacks collect is forwarded
    /// by the caller afterwards.
    async fn mcast(&mut self, s: &Session, h: &cpg::Handle, bytes: &[u8]) -> Result<(), SendError> {
        let budget = if self.congested {
            SEND_RETRY_BUDGET_CONGESTED
        } else {
            SEND_RETRY_BUDGET
        };
        let deadline = Instant::now() + budget;
        let mut wait = Duration::from_millis(1);
        let mut retries = 0u32;
        loop {
            match cpg::mcast_joined(h, cpg::Guarantee::TypeAgreed, bytes) {
                Ok(()) => {
                    if retries > 0 {
                        tracing::debug!(retries, "multicast sent after flow-control retries");
                    }
                    self.congested = false;
                    return Ok(());
                }
                Err(CsError::CsErrTryAgain) => {
                    retries += 1;
                    if Instant::now() >= deadline {
                        self.congested = true;
                        return Err(SendError::Dropped(format!(
                            "corosync flow control (ErrTryAgain) for {} ms",
                            budget.as_millis()
                        )));
                    }
                    dispatch_all(s).map_err(SendError::Lost)?;
                    tokio::select! {
                        _ = self.cancel.cancelled() => return Err(SendError::Dropped("shutdown".into())),
                        _ = tokio::time::sleep(wait) => {}
                    }
                    wait = (wait * 2).min(SEND_RETRY_MAX_SLEEP);
                }
                Err(e @ (CsError::CsErrLibrary | CsError::CsErrBadHandle)) => {
                    return Err(SendError::Lost(format!("cpg_mcast_joined: {e}")));
                }
                Err(e) => return Err(SendError::Dropped(format!("cpg_mcast_joined: {e}"))),
            }
        }
    }
}

fn fence_req(w: FenceWire) -> FenceReq {
    FenceReq {
        vm_name: w.vm_name,
        request: w.request,
        seqno: w.seqno,
        response: w.response,
    }
}

fn fence_wire(r: FenceReq) -> FenceWire {
    FenceWire {
        vm_name: r.vm_name,
        request: r.request,
        seqno: r.seqno,
        response: r.response,
    }
}

/// Turns a parsed `fence-agents` frame into a model input.
fn fence_agents_input(at: u64, from: NodeId, pid: u32, frame: Frame) -> Option<Input> {
    match frame.msg {
        // `from` is the CPG sender, not `s_owner`: fence_virtd puts its own
        // nodeid there, and only the sender is authenticated by corosync.
        FenceAgentsMsg::StoreVm(record) => Some(Input::PeerRecord { at, from, record }),
        FenceAgentsMsg::Request(req) => {
            tracing::debug!(from, pid, seqno = frame.seqno, vm = %req.vm_name, request = req.request, "fence-agents REQUEST");
            Some(Input::FenceCpgRequest {
                at,
                from,
                seqno: frame.seqno,
                body: fence_wire(req),
            })
        }
        FenceAgentsMsg::Reply(req) => {
            tracing::debug!(from, pid, seqno = frame.seqno, target = frame.target, vm = %req.vm_name, response = req.response, "fence-agents REPLY");
            Some(Input::FenceCpgReply {
                at,
                from,
                seqno: frame.seqno,
                target: frame.target,
                body: fence_wire(req),
            })
        }
    }
}

fn fmt_members(list: &[GroupMember]) -> String {
    let parts: Vec<String> = list
        .iter()
        .map(|m| {
            if m.reason.is_empty() || m.reason == "Undefined" {
                format!("{}/{}", m.nodeid, m.pid)
            } else {
                format!("{}/{}:{}", m.nodeid, m.pid, m.reason)
            }
        })
        .collect();
    format!("[{}]", parts.join(" "))
}

/// Awaits readability of an optional fd; never completes for `None`.
async fn readable_opt(fd: Option<&AsyncFd<CsFd>>) -> io::Result<AsyncFdReadyGuard<'_, CsFd>> {
    match fd {
        Some(fd) => fd.readable().await,
        None => std::future::pending().await,
    }
}

fn dispatch_cpg(r: io::Result<AsyncFdReadyGuard<'_, CsFd>>, h: &cpg::Handle) -> Result<(), String> {
    dispatch_with(r, "cpg", || cpg::dispatch(h, DispatchFlags::All))
}

/// Runs `dispatch(All)` for a readable fd, then clears its readiness (the
/// reactor is edge-triggered, so everything must be drained first).
fn dispatch_with(
    r: io::Result<AsyncFdReadyGuard<'_, CsFd>>,
    what: &str,
    dispatch: impl FnOnce() -> rust_corosync::Result<()>,
) -> Result<(), String> {
    let mut guard = r.map_err(|e| format!("{what} fd: {e}"))?;
    let res = dispatch();
    guard.clear_ready();
    match res {
        Ok(()) | Err(CsError::CsErrTryAgain) => Ok(()),
        Err(e) => Err(format!("{what}_dispatch: {e}")),
    }
}

/// Dispatches every handle without waiting for readiness (used while a
/// send is being retried). Readiness is left set, so the main loop will
/// dispatch again and then clear it: no wakeup is lost.
fn dispatch_all(s: &Session) -> Result<(), String> {
    let ok = |r: rust_corosync::Result<()>, what: &str| match r {
        Ok(()) | Err(CsError::CsErrTryAgain) => Ok(()),
        Err(e) => Err(format!("{what}_dispatch: {e}")),
    };
    ok(cpg::dispatch(&s.fence, DispatchFlags::All), "cpg")?;
    ok(cpg::dispatch(&s.own, DispatchFlags::All), "cpg")?;
    ok(quorum::dispatch(&s.quorum, DispatchFlags::All), "quorum")?;
    if let Some(h) = &s.vq {
        ok(votequorum::dispatch(h, DispatchFlags::All), "votequorum")?;
    }
    Ok(())
}

/// (expected, total, quorum). `total` is the sum of the members' votes plus
/// the quorum device's when it casts a vote (rust-corosync does not expose
/// votequorum's own `total_votes`).
fn read_votes(
    vq: &votequorum::Handle,
    local: NodeId,
    members: &[NodeId],
) -> Option<(u32, u32, u32)> {
    let info = match votequorum::get_info(vq, CsNodeId::from(local)) {
        Ok(i) => i,
        Err(e) => {
            tracing::debug!(error = %e, "votequorum_getinfo failed");
            return None;
        }
    };
    let expected = if info.node_expected_votes > 0 {
        info.node_expected_votes
    } else {
        info.highest_expected
    };
    let mut total: u32 = 0;
    for &m in members {
        let votes = if m == local {
            Some(info.node_votes)
        } else {
            votequorum::get_info(vq, CsNodeId::from(m))
                .ok()
                .filter(|i| matches!(i.node_state, votequorum::NodeState::Member))
                .map(|i| i.node_votes)
        };
        total = total.saturating_add(votes.unwrap_or(0));
    }
    if info
        .flags
        .contains(votequorum::NodeInfoFlags::VOTEQUORUM_INFO_QDEVICE_CAST_VOTE)
    {
        total = total.saturating_add(info.qdevice_votes);
    }
    Some((expected, total, info.quorum))
}

fn data_u32(d: &cmap::Data) -> Option<u32> {
    match d {
        cmap::Data::UInt32(v) => Some(*v),
        cmap::Data::Int32(v) => u32::try_from(*v).ok(),
        cmap::Data::UInt64(v) => u32::try_from(*v).ok(),
        cmap::Data::Int64(v) => u32::try_from(*v).ok(),
        cmap::Data::UInt16(v) => Some(u32::from(*v)),
        cmap::Data::UInt8(v) => Some(u32::from(*v)),
        cmap::Data::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// Reads `totem.cluster_name` and `nodelist.node.N.{nodeid,name}` once.
fn read_cmap() -> Result<UpInfo, String> {
    let h = cmap::initialize(cmap::Map::Icmap).map_err(|e| format!("cmap_initialize: {e}"))?;
    let cluster_name = match cmap::get(&h, "totem.cluster_name") {
        Ok(cmap::Data::String(s)) if !s.is_empty() => Some(s),
        _ => None,
    };
    // index → (nodeid, name)
    let mut nodes: std::collections::BTreeMap<u32, (Option<u32>, Option<String>)> =
        std::collections::BTreeMap::new();
    let iter = cmap::CmapIterStart::new(&h, "nodelist.node.")
        .map_err(|e| format!("cmap_iter_init: {e}"))?;
    for item in iter {
        let Some(rest) = item.key_name().strip_prefix("nodelist.node.") else {
            continue;
        };
        let Some((idx, field)) = rest.split_once('.') else {
            continue;
        };
        let Ok(idx) = idx.parse::<u32>() else {
            continue;
        };
        let entry = nodes.entry(idx).or_default();
        match field {
            "nodeid" => entry.0 = data_u32(item.data()),
            "name" => {
                if let cmap::Data::String(s) = item.data()
                    && !s.is_empty()
                {
                    entry.1 = Some(s.clone());
                }
            }
            _ => {}
        }
    }
    drop(h); // finalizes the cmap connection
    let nodelist = nodes
        .into_values()
        .filter_map(|(id, name)| id.map(|id| (id, name)))
        .collect();
    Ok(UpInfo {
        cluster_name,
        nodelist,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_stays_within_bounds() {
        let mut j = Jitter::new();
        for _ in 0..1000 {
            let d = j.apply(Duration::from_millis(1000));
            assert!(
                d >= Duration::from_millis(800) && d < Duration::from_millis(1200),
                "{d:?}"
            );
        }
    }

    #[test]
    fn warn_limiter_allows_one_per_interval_per_key() {
        let mut w = WarnLimiter::default();
        assert_eq!(w.allow(Group::Own, 1), Some(0));
        assert_eq!(w.allow(Group::Own, 1), None);
        assert_eq!(w.allow(Group::Own, 1), None);
        assert_eq!(w.allow(Group::Own, 2), Some(0));
        assert_eq!(w.allow(Group::FenceAgents, 1), Some(0));
        // Pretend the interval passed.
        if let Some((when, _)) = w.last.get_mut(&(group_key(Group::Own), 1)) {
            *when -= WARN_INTERVAL;
        }
        assert_eq!(w.allow(Group::Own, 1), Some(2));
    }

    #[test]
    fn pending_buffer_round_trip() {
        let _ = take_pending();
        push(Raw::VotesChanged);
        push(Raw::Quorum {
            quorate: true,
            members: vec![1],
        });
        let v = take_pending();
        assert_eq!(v.len(), 2);
        assert!(take_pending().is_empty());
    }

    #[test]
    fn store_vm_becomes_peer_record_from_sender() {
        let frame = Frame::store_vm(VmRecord {
            name: "vm1".into(),
            uuid: "u".into(),
            owner: 9,
            state: fenceline_proto::api::DomainState::Running,
        });
        match fence_agents_input(5, 2, 100, frame) {
            Some(Input::PeerRecord { at, from, record }) => {
                assert_eq!((at, from, record.owner), (5, 2, 9));
            }
            other => panic!("unexpected {other:?}"),
        }
    }
}
