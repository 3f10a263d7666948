//! Per-source limits, so one guest (or one key holder) cannot starve the
//! others: [`SourceSlots`] caps how many connections or requests run at
//! once in all and from one source (the pre-authentication pool of the
//! stream listeners; the serving slots of every listener), and
//! [`Sources`] adds a per-source request rate for served requests.
//!
//! A source is the peer address or vsock CID of a stream connection, or the
//! callback address of a multicast request (inside the signed packet, so a
//! keyless sender cannot spend a guest's budget by spoofing its address).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use fenceline_proto::ratelimit::RateLimit;

use super::MAX_CONCURRENT;
use super::refusal::Refusal;

/// Serving slots one source may hold: the last ones are always left to
/// the others.
pub const SERVE_PER_SOURCE: usize = MAX_CONCURRENT - 8;
/// Requests one source may have served per second (a burst of 27
/// concurrent fence_xvm runs with their retransmissions fits).
pub const REQUESTS_PER_SOURCE_PER_SEC: u32 = 64;

/// Why a slot was not given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Full {
    /// All `total` slots are taken.
    Total(usize),
    /// The source holds its `per_source` slots.
    Source(usize),
}

/// At most `total` slots in all and `per_source` for one source.
#[derive(Debug, Clone)]
pub(crate) struct SourceSlots {
    inner: Arc<Mutex<Counts>>,
    total: usize,
    per_source: usize,
}

#[derive(Debug, Default)]
struct Counts {
    total: usize,
    per_source: HashMap<String, usize>,
}

/// A slot; freed when dropped.
#[derive(Debug)]
pub(crate) struct Slot {
    slots: SourceSlots,
    source: String,
}

impl SourceSlots {
    pub(crate) fn new(total: usize, per_source: usize) -> Self {
        Self {
            inner: Arc::default(),
            total,
            per_source,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Counts> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A slot for `source`, or which limit is reached.
    pub(crate) fn enter(&self, source: &str) -> Result<Slot, Full> {
        let mut c = self.lock();
        if c.total >= self.total {
            return Err(Full::Total(self.total));
        }
        let n = c.per_source.entry(source.to_string()).or_default();
        if *n >= self.per_source {
            return Err(Full::Source(self.per_source));
        }
        *n += 1;
        c.total += 1;
        Ok(Slot {
            slots: self.clone(),
            source: source.to_string(),
        })
    }

    /// (all taken, taken by `source`)
    #[cfg(test)]
    pub(crate) fn counts(&self, source: &str) -> (usize, usize) {
        let c = self.lock();
        (c.total, c.per_source.get(source).copied().unwrap_or(0))
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut c = self.slots.lock();
        c.total = c.total.saturating_sub(1);
        if let Some(n) = c.per_source.get_mut(&self.source) {
            *n -= 1;
            if *n == 0 {
                c.per_source.remove(&self.source);
            }
        }
    }
}

/// One listener's per-source limits for served requests: the serving
/// slots and the request rate.
#[derive(Debug)]
pub(crate) struct Sources {
    slots: SourceSlots,
    rate: Mutex<RateLimit<String>>,
}

impl Default for Sources {
    fn default() -> Self {
        Self {
            slots: SourceSlots::new(MAX_CONCURRENT, SERVE_PER_SOURCE),
            rate: Mutex::new(RateLimit::new(
                Duration::from_secs(1),
                REQUESTS_PER_SOURCE_PER_SEC,
            )),
        }
    }
}

impl Sources {
    /// A serving slot for a request from `source`, or the refusal.
    pub(crate) fn enter(&self, source: &str, now: Instant) -> Result<Slot, Refusal> {
        let allowed = self
            .rate
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .allow(source.to_string(), now);
        if allowed.is_none() {
            return Err(Refusal::SourceRate(REQUESTS_PER_SOURCE_PER_SEC));
        }
        self.slots.enter(source).map_err(|full| match full {
            Full::Total(_) => Refusal::Busy,
            Full::Source(n) => Refusal::SourceServing(n),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_limited_per_source_and_in_all_and_freed_on_drop() {
        let p = SourceSlots::new(6, 2);
        let mine: Vec<_> = (0..2).map(|_| p.enter("10.0.0.5").unwrap()).collect();
        assert_eq!(p.enter("10.0.0.5").unwrap_err(), Full::Source(2));
        // Another guest is not affected.
        let other = p.enter("42").unwrap();
        assert_eq!(p.counts("10.0.0.5"), (3, 2));
        drop(mine);
        drop(other);
        assert_eq!(p.counts("10.0.0.5"), (0, 0));
        let many: Vec<_> = (0..6)
            .map(|i| p.enter(&format!("10.1.0.{i}")).unwrap())
            .collect();
        assert_eq!(p.enter("10.9.9.9").unwrap_err(), Full::Total(6));
        drop(many);
        assert!(p.enter("10.9.9.9").is_ok());
    }

    #[test]
    fn one_source_never_takes_the_last_serving_slots_nor_floods() {
        let s = Sources::default();
        let t0 = Instant::now();
        let held: Vec<_> = (0..SERVE_PER_SOURCE)
            .map(|_| s.enter("10.0.0.5", t0).unwrap())
            .collect();
        assert_eq!(
            s.enter("10.0.0.5", t0).unwrap_err(),
            Refusal::SourceServing(SERVE_PER_SOURCE)
        );
        // The others still get the slots left.
        let others: Vec<_> = (0..MAX_CONCURRENT - SERVE_PER_SOURCE)
            .map(|i| s.enter(&format!("10.0.1.{i}"), t0).unwrap())
            .collect();
        assert_eq!(s.enter("10.0.2.1", t0).unwrap_err(), Refusal::Busy);
        drop(held);
        drop(others);
        // The rate: the burst passes (the slots are given back), then the
        // rest of that second is refused, and the next second passes again.
        let flood = REQUESTS_PER_SOURCE_PER_SEC as usize - SERVE_PER_SOURCE - 1;
        for _ in 0..flood {
            drop(s.enter("10.0.0.5", t0).unwrap());
        }
        assert_eq!(
            s.enter("10.0.0.5", t0).unwrap_err(),
            Refusal::SourceRate(REQUESTS_PER_SOURCE_PER_SEC)
        );
        assert!(
            s.enter("10.0.0.6", t0).is_ok(),
            "another source is not limited"
        );
        assert!(s.enter("10.0.0.5", t0 + Duration::from_secs(1)).is_ok());
    }
}
