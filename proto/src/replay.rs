//! The replay record: every verified fence_xvm request of the last hour, by
//! the digest of its signed bytes. A request is accepted once; an exact
//! copy is a replay for the whole lifetime, however it arrives (another
//! listener, a later packet). Bounded: when full, the oldest entry goes and
//! is counted. Pure: the caller passes the time in and holds the lock
//! (`engine/fence/guard.rs`). Fuzzed as a state machine with the
//! challenge/response (`fuzz_targets/handshake_state.rs`).

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use crate::fence_xvm::{HashType, REQ_LEN};

/// How long a verified request stays recorded (at least an hour: far longer
/// than any client's retries, and longer than fence_virtd's 10 s window).
pub const RECORD_LIFETIME: Duration = Duration::from_secs(3600);
/// Most requests recorded; when full the oldest go first (and are counted
/// as evictions, logged by the listeners).
pub const RECORD_CAP: usize = 65_536;

/// SHA-256 of the 176 signed bytes.
pub type Digest = [u8; 32];

/// The digest of a raw request.
pub fn digest(raw: &[u8; REQ_LEN]) -> Digest {
    let d = HashType::Sha256.digest(&[raw]);
    let mut out = [0u8; 32];
    out.copy_from_slice(&d[..32]);
    out
}

/// Every verified request of the last [`RECORD_LIFETIME`], oldest first.
/// An entry is never refreshed (a repeat is refused, not re-recorded), so
/// insertion order is age order and the queue is the LRU.
#[derive(Debug)]
pub struct Record {
    lifetime: Duration,
    cap: usize,
    seen: HashMap<Digest, Duration>,
    order: VecDeque<(Digest, Duration)>,
    evictions: u64,
}

impl Default for Record {
    fn default() -> Self {
        Self::new(RECORD_LIFETIME, RECORD_CAP)
    }
}

/// What [`Record::admit`] decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    /// First sight; recorded.
    New,
    /// First sight; recorded, and the oldest entry still within its
    /// lifetime was evicted to make room (the record is full).
    NewEvicting,
    /// An exact repeat of a recorded request, first seen `age` ago.
    Replay { age: Duration },
}

impl Record {
    pub fn new(lifetime: Duration, cap: usize) -> Self {
        Self {
            lifetime,
            cap: cap.max(1),
            seen: HashMap::new(),
            order: VecDeque::new(),
            evictions: 0,
        }
    }

    /// Refuses a repeat; records anything new. `now` is monotonic time
    /// since any fixed epoch (the caller's clock; this crate reads none).
    pub fn admit(&mut self, d: Digest, now: Duration) -> Admit {
        self.expire(now);
        if let Some(t) = self.seen.get(&d) {
            return Admit::Replay {
                age: now.saturating_sub(*t),
            };
        }
        let mut evicted = false;
        while self.order.len() >= self.cap {
            if let Some((old, _)) = self.order.pop_front() {
                self.seen.remove(&old);
                self.evictions += 1;
                evicted = true;
            }
        }
        self.seen.insert(d, now);
        self.order.push_back((d, now));
        if evicted {
            Admit::NewEvicting
        } else {
            Admit::New
        }
    }

    fn expire(&mut self, now: Duration) {
        while let Some((d, t)) = self.order.front() {
            if now.saturating_sub(*t) <= self.lifetime {
                break;
            }
            self.seen.remove(d);
            self.order.pop_front();
        }
    }

    pub fn len(&self) -> usize {
        self.order.len()
    }

    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }

    /// Entries pushed out by the cap before their lifetime ended.
    pub fn evictions(&self) -> u64 {
        self.evictions
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(n: u8) -> Digest {
        [n; 32]
    }

    #[test]
    fn an_exact_repeat_is_a_replay_for_the_whole_lifetime() {
        let t0 = Duration::from_secs(7);
        let mut r = Record::default();
        assert_eq!(r.admit(d(1), t0), Admit::New);
        assert_eq!(
            r.admit(d(1), t0 + Duration::from_secs(1)),
            Admit::Replay {
                age: Duration::from_secs(1)
            }
        );
        let late = t0 + Duration::from_secs(3599);
        assert!(matches!(r.admit(d(1), late), Admit::Replay { .. }));
        // Not refreshed by the repeats: gone an hour after first sight.
        assert_eq!(
            r.admit(d(1), t0 + RECORD_LIFETIME + Duration::from_secs(1)),
            Admit::New
        );
        assert_eq!(r.admit(d(2), late), Admit::New);
    }

    #[test]
    fn a_full_record_evicts_the_oldest_and_counts() {
        let t0 = Duration::from_secs(7);
        let mut r = Record::new(RECORD_LIFETIME, 3);
        for n in 1..=3 {
            assert_eq!(r.admit(d(n), t0), Admit::New);
        }
        assert_eq!(r.admit(d(4), t0), Admit::NewEvicting);
        assert_eq!((r.len(), r.evictions()), (3, 1));
        assert_eq!(r.admit(d(1), t0), Admit::NewEvicting, "1 was evicted");
        assert!(matches!(r.admit(d(4), t0), Admit::Replay { .. }));
        assert_eq!(RECORD_CAP, 65_536);
        assert!(RECORD_LIFETIME >= Duration::from_secs(3600));
    }

    #[test]
    fn expired_entries_leave_without_counting_as_evictions() {
        let t0 = Duration::from_secs(7);
        let mut r = Record::new(Duration::from_secs(10), 2);
        r.admit(d(1), t0);
        r.admit(d(2), t0);
        assert_eq!(r.admit(d(3), t0 + Duration::from_secs(11)), Admit::New);
        assert_eq!((r.len(), r.evictions()), (1, 0));
    }

    #[test]
    fn digest_covers_every_byte() {
        let a = [0u8; REQ_LEN];
        let mut b = a;
        b[175] = 1;
        assert_ne!(digest(&a), digest(&b));
        assert_eq!(digest(&a), digest(&[0u8; REQ_LEN]));
    }
}
