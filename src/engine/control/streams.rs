//! Bookkeeping the control server shares across connections: streams per
//! uid (capped), one encoding of each snapshot version for every watcher,
//! and the refused read-write peers (counted, logged rate-limited).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::access::Peer;
use super::framing::encode_line;
use fenceline_proto::api::{Reply, Snapshot};
use fenceline_proto::ratelimit::RateLimit;

/// Read-write peers refused since start (all sockets of this process).
pub static REFUSED_PEERS: AtomicU64 = AtomicU64::new(0);

/// Refused read-write connections: counted, logged at most 3 lines per
/// uid per minute (the line carries the suppressed count and the total).
pub struct Refusals(RateLimit<u32>);

impl Default for Refusals {
    fn default() -> Self {
        Self(RateLimit::new(Duration::from_secs(60), 3))
    }
}

impl Refusals {
    pub fn refuse(&mut self, peer: Option<&Peer>) {
        let total = REFUSED_PEERS.fetch_add(1, Ordering::Relaxed) + 1;
        let uid = peer.map_or(u32::MAX, |p| p.uid);
        if let Some(suppressed) = self.0.allow(uid, Instant::now()) {
            tracing::warn!(
                uid,
                pid = peer.map_or(0, |p| p.pid),
                suppressed,
                total,
                "control: refused a read-write connection from a peer that is neither root nor in control.admin_group"
            );
        }
    }
}

/// Shared by both sockets' connections.
#[derive(Clone)]
pub struct Streams {
    per_uid: Arc<Mutex<HashMap<u32, usize>>>,
    cap: usize,
    encoded: Arc<Mutex<Option<Encoded>>>,
}

/// A snapshot version and its `status` reply line.
type Encoded = (u64, Arc<[u8]>);

/// One open stream; its slot is given back when dropped.
pub struct StreamSlot {
    per_uid: Arc<Mutex<HashMap<u32, usize>>>,
    uid: u32,
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        let mut m = self.per_uid.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = m.get_mut(&self.uid) {
            *n -= 1;
            if *n == 0 {
                m.remove(&self.uid);
            }
        }
    }
}

impl Streams {
    pub fn new(cap: usize) -> Self {
        Self {
            per_uid: Arc::default(),
            cap: cap.max(1),
            encoded: Arc::default(),
        }
    }

    /// A stream slot for `uid`, or `None` when it already has `cap`.
    pub fn open(&self, uid: u32) -> Option<StreamSlot> {
        let mut m = self.per_uid.lock().unwrap_or_else(|e| e.into_inner());
        let n = m.entry(uid).or_insert(0);
        if *n >= self.cap {
            return None;
        }
        *n += 1;
        Some(StreamSlot {
            per_uid: self.per_uid.clone(),
            uid,
        })
    }

    /// The `status` reply line for `snapshot`, encoded once per version and
    /// shared by every watcher.
    pub fn status_line(&self, snapshot: &Arc<Snapshot>) -> std::io::Result<Arc<[u8]>> {
        let mut cache = self.encoded.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((v, bytes)) = cache.as_ref()
            && *v == snapshot.version
        {
            return Ok(bytes.clone());
        }
        let line: Arc<[u8]> = encode_line(&Reply::Status {
            snapshot: snapshot.clone(),
        })
        .map_err(std::io::Error::other)?
        .into();
        *cache = Some((snapshot.version, line.clone()));
        Ok(line)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_are_capped_per_uid_and_given_back() {
        let s = Streams::new(2);
        let a = s.open(7).unwrap();
        let _b = s.open(7).unwrap();
        assert!(s.open(7).is_none(), "a third stream for uid 7");
        let _c = s.open(8).expect("another uid has its own cap");
        drop(a);
        assert!(s.open(7).is_some(), "a closed stream gives its slot back");
    }

    #[tokio::test]
    async fn one_encoding_per_snapshot_version() {
        let (eff_tx, _eff_rx) = tokio::sync::mpsc::channel(16);
        let cancel = tokio_util::sync::CancellationToken::new();
        let (engine, _input, _task) = crate::engine::spawn_state(
            crate::engine::model::ModelConfig::default(),
            crate::engine::EffectRoutes::corosync_only(eff_tx),
            cancel.clone(),
        );
        let s = Streams::new(8);
        let snap = engine.snapshot();
        let a = s.status_line(&snap).unwrap();
        let b = s.status_line(&snap).unwrap();
        assert!(Arc::ptr_eq(&a, &b), "the second watcher re-encoded");
        let mut next = Snapshot::clone(&snap);
        next.version = snap.version + 1;
        let c = s.status_line(&Arc::new(next)).unwrap();
        assert!(!Arc::ptr_eq(&a, &c));
        assert!(a.ends_with(b"\n"));
        cancel.cancel();
    }

    /// End to end over real sockets: a uid's streams beyond the cap get
    /// `busy`; one closed gives its slot back; plain requests are not capped.
    #[tokio::test]
    async fn the_stream_cap_holds_over_real_sockets() {
        use super::super::access::SocketAccess;
        use super::super::client::Client;
        use super::super::server::{bind_with, serve};
        use fenceline_proto::api::Request;
        let dir = tempfile::tempdir().unwrap();
        let (rw, ro) = (dir.path().join("rw.sock"), dir.path().join("ro.sock"));
        let cancel = tokio_util::sync::CancellationToken::new();
        let (eff_tx, _eff_rx) = tokio::sync::mpsc::channel(16);
        let (engine, _input, _task) = crate::engine::spawn_state(
            crate::engine::model::ModelConfig::default(),
            crate::engine::EffectRoutes::corosync_only(eff_tx),
            cancel.clone(),
        );
        let access = SocketAccess {
            max_streams_per_uid: 2,
            ..SocketAccess::root_only()
        };
        let sockets = bind_with(&rw, &ro, access).await.unwrap();
        let server = tokio::spawn(serve(sockets, engine, cancel.clone()));
        let t = Some(Duration::from_secs(5));
        let watch = Request::Watch {
            interval_ms: Some(1000),
        };
        let mut open = Vec::new();
        for _ in 0..2 {
            let mut c = Client::connect(&ro).await.unwrap();
            c.send(&watch).await.unwrap();
            assert!(matches!(c.next(t).await.unwrap(), Reply::Status { .. }));
            open.push(c);
        }
        let mut third = Client::connect(&rw).await.unwrap();
        third.send(&watch).await.unwrap();
        match third.next(t).await.unwrap() {
            Reply::Error { code, .. } => assert_eq!(code, "busy"),
            other => panic!("a third stream: {other:?}"),
        }
        let mut plain = Client::connect(&ro).await.unwrap();
        plain.send(&Request::Ping).await.unwrap();
        assert!(matches!(plain.next(t).await.unwrap(), Reply::Pong { .. }));
        drop(open.pop());
        // The server notices the hang-up within its check interval.
        let mut again = None;
        for _ in 0..30 {
            tokio::time::sleep(Duration::from_millis(200)).await;
            let mut c = Client::connect(&ro).await.unwrap();
            c.send(&watch).await.unwrap();
            if let Reply::Status { .. } = c.next(t).await.unwrap() {
                again = Some(c);
                break;
            }
        }
        assert!(
            again.is_some(),
            "the closed stream's slot was not given back"
        );
        cancel.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(5), server).await;
    }
}
