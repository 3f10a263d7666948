//! Duplicate and replay suppression, exactly like fence_virtd's history
//! (fence-virt-protocol.md §2.5): two requests are the same when their opcode
//! and seqno are equal and their domains are equal ignoring ASCII case; a
//! request that matches one answered in the last 10 s is dropped. Entries are
//! recorded after the request was answered (multicast: only when the
//! connect-back succeeded), so a retransmission of a request that failed
//! before it reached the engine is tried again.
//!
//! fence_virtd handles one request at a time, so a retransmission that arrives
//! while the first copy is still being handled waits and is then dropped. We
//! handle requests concurrently, so [`InFlight`] drops such copies instead.
//!
//! Exact copies of a packet (a replay, at any age up to an hour) are refused
//! earlier by the process-wide record in [`guard`](super::guard); this
//! history stays because real retransmissions are re-signed with fresh
//! random bytes and only this rule keeps one from repeating an action.
//!
//! Pure: the caller passes the time in.

use std::collections::{HashSet, VecDeque};
use std::hash::Hash;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// fence_virtd's window.
pub const HISTORY_WINDOW: Duration = Duration::from_secs(10);
/// Most entries kept; beyond it the oldest go first (a flood of validly
/// signed, distinct requests cannot grow memory without bound).
pub const HISTORY_CAP: usize = 16_384;

/// What identifies a request for dedup.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RequestKey {
    pub op: u8,
    pub seqno: u32,
    /// The domain, ASCII-lowercased (fence_virtd uses strcasecmp).
    pub domain: String,
}

impl RequestKey {
    pub fn new(op: u8, seqno: u32, domain: &str) -> Self {
        Self {
            op,
            seqno,
            domain: domain.to_ascii_lowercase(),
        }
    }
}

/// Recently answered requests.
#[derive(Debug)]
pub struct History {
    window: Duration,
    cap: usize,
    /// Oldest first.
    entries: VecDeque<(Instant, RequestKey)>,
}

impl Default for History {
    fn default() -> Self {
        Self::new(HISTORY_WINDOW, HISTORY_CAP)
    }
}

impl History {
    pub fn new(window: Duration, cap: usize) -> Self {
        Self {
            window,
            cap: cap.max(1),
            entries: VecDeque::new(),
        }
    }

    /// Drops entries older than the window, then tells whether `key` was
    /// answered within it.
    pub fn seen(&mut self, key: &RequestKey, now: Instant) -> bool {
        self.expire(now);
        self.entries.iter().any(|(_, k)| k == key)
    }

    /// Records an answered request at `now` (taken after the engine answered).
    pub fn record(&mut self, key: RequestKey, now: Instant) {
        self.expire(now);
        while self.entries.len() >= self.cap {
            self.entries.pop_front();
        }
        self.entries.push_back((now, key));
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn expire(&mut self, now: Instant) {
        // fence_virtd removes an entry when `when < now - 10`: an entry
        // exactly 10 s old still counts.
        while let Some((t, _)) = self.entries.front() {
            if now.saturating_duration_since(*t) > self.window {
                self.entries.pop_front();
            } else {
                break;
            }
        }
    }
}

/// Requests being handled right now. `begin` returns a guard that removes
/// the entry when dropped, or `None` when the same key is already in flight.
#[derive(Debug)]
pub struct InFlight<K: Eq + Hash> {
    set: Arc<Mutex<HashSet<K>>>,
}

impl<K: Eq + Hash> Clone for InFlight<K> {
    fn clone(&self) -> Self {
        Self {
            set: self.set.clone(),
        }
    }
}

impl<K: Eq + Hash> Default for InFlight<K> {
    fn default() -> Self {
        Self {
            set: Arc::new(Mutex::new(HashSet::new())),
        }
    }
}

impl<K: Eq + Hash + Clone> InFlight<K> {
    pub fn begin(&self, key: K) -> Option<InFlightGuard<K>> {
        let mut set = self.set.lock().unwrap_or_else(PoisonError::into_inner);
        if !set.insert(key.clone()) {
            return None;
        }
        Some(InFlightGuard {
            set: self.set.clone(),
            key: Some(key),
        })
    }

    pub fn len(&self) -> usize {
        self.set
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Removes its key from the in-flight set when dropped.
#[derive(Debug)]
pub struct InFlightGuard<K: Eq + Hash> {
    set: Arc<Mutex<HashSet<K>>>,
    key: Option<K>,
}

impl<K: Eq + Hash> Drop for InFlightGuard<K> {
    fn drop(&mut self) {
        if let Some(k) = self.key.take() {
            self.set
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .remove(&k);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STATUS: u8 = 4;
    const OFF: u8 = 1;

    // The cases fence-virt-protocol.md §2.5 tested against fence_virtd 4.12.1
    // (status, seq 4242, "test").
    #[test]
    fn reference_cases() {
        let t0 = Instant::now();
        let mut h = History::default();
        let key = RequestKey::new(STATUS, 4242, "test");
        assert!(!h.seen(&key, t0));
        h.record(key.clone(), t0);
        // Resent unchanged: dropped.
        assert!(h.seen(&key, t0 + Duration::from_secs(1)));
        // "TEST" with the same seq: dropped.
        assert!(h.seen(
            &RequestKey::new(STATUS, 4242, "TEST"),
            t0 + Duration::from_secs(2)
        ));
        // `off` with the same seq: processed.
        assert!(!h.seen(
            &RequestKey::new(OFF, 4242, "test"),
            t0 + Duration::from_secs(2)
        ));
        // The same status after more than 10 s: processed again.
        assert!(!h.seen(&key, t0 + Duration::from_millis(10_001)));
        assert!(h.is_empty(), "expired entries are removed");
    }

    #[test]
    fn exactly_ten_seconds_still_counts() {
        let t0 = Instant::now();
        let mut h = History::default();
        let key = RequestKey::new(STATUS, 1, "vm");
        h.record(key.clone(), t0);
        assert!(h.seen(&key, t0 + HISTORY_WINDOW));
    }

    #[test]
    fn other_seqno_or_domain_is_new() {
        let t0 = Instant::now();
        let mut h = History::default();
        h.record(RequestKey::new(OFF, 7, "vm1"), t0);
        assert!(!h.seen(&RequestKey::new(OFF, 8, "vm1"), t0));
        assert!(!h.seen(&RequestKey::new(OFF, 7, "vm2"), t0));
        assert!(h.seen(&RequestKey::new(OFF, 7, "VM1"), t0));
    }

    #[test]
    fn case_folding_is_ascii_only_like_strcasecmp() {
        // strcasecmp in the C locale folds ASCII only.
        assert_ne!(RequestKey::new(1, 1, "VÄ"), RequestKey::new(1, 1, "vä"));
        assert_eq!(RequestKey::new(1, 1, "VÄ"), RequestKey::new(1, 1, "vÄ"));
    }

    #[test]
    fn capacity_evicts_the_oldest() {
        let t0 = Instant::now();
        let mut h = History::new(HISTORY_WINDOW, 3);
        for i in 0..5 {
            h.record(RequestKey::new(OFF, i, "vm"), t0);
        }
        assert_eq!(h.len(), 3);
        assert!(!h.seen(&RequestKey::new(OFF, 0, "vm"), t0));
        assert!(!h.seen(&RequestKey::new(OFF, 1, "vm"), t0));
        assert!(h.seen(&RequestKey::new(OFF, 4, "vm"), t0));
    }

    #[test]
    fn in_flight_refuses_a_second_copy_until_the_first_ends() {
        let f: InFlight<RequestKey> = InFlight::default();
        let key = RequestKey::new(OFF, 9, "vm");
        let g = f.begin(key.clone()).expect("first copy");
        assert!(f.begin(RequestKey::new(OFF, 9, "VM")).is_none());
        assert!(f.begin(RequestKey::new(OFF, 10, "vm")).is_some());
        drop(g);
        assert!(f.begin(key).is_some());
        assert!(f.is_empty());
    }
}
