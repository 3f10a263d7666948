//! The one rate limit for log lines. A driver that may see a flood of bad
//! input (malformed CPG messages, refused guest packets, hook datagrams)
//! asks [`RateLimit::allow`] before logging; the suppressed count rides on
//! the next line that is let through. Counters elsewhere keep every drop,
//! so only the log is thinned. Pure: the caller passes the time.

use std::collections::HashMap;
use std::hash::Hash;
use std::time::{Duration, Instant};

/// At most `burst` lines per `window` per key.
#[derive(Debug)]
pub struct RateLimit<K = ()> {
    window: Duration,
    burst: u32,
    keys: HashMap<K, Slot>,
    max_keys: usize,
}

#[derive(Debug, Clone, Copy)]
struct Slot {
    start: Instant,
    logged: u32,
    suppressed: u64,
}

impl<K: Hash + Eq + Clone> RateLimit<K> {
    /// `burst` lines per `window` for each key (at least one line).
    /// At most 1,024 keys are tracked; past that the oldest windows are
    /// forgotten (which only lets one more line through).
    pub fn new(window: Duration, burst: u32) -> Self {
        Self {
            window,
            burst: burst.max(1),
            keys: HashMap::new(),
            max_keys: 1024,
        }
    }

    /// `Some(n)` when a line for `key` may be logged now, `n` being the
    /// number of lines suppressed for that key since the last one logged.
    pub fn allow(&mut self, key: K, now: Instant) -> Option<u64> {
        if self.keys.len() >= self.max_keys && !self.keys.contains_key(&key) {
            let window = self.window;
            self.keys
                .retain(|_, s| now.saturating_duration_since(s.start) < window);
            if self.keys.len() >= self.max_keys {
                self.keys.clear();
            }
        }
        let slot = self.keys.entry(key).or_insert(Slot {
            start: now,
            logged: 0,
            suppressed: 0,
        });
        if now.saturating_duration_since(slot.start) >= self.window {
            slot.start = now;
            slot.logged = 0;
        }
        if slot.logged < self.burst {
            slot.logged += 1;
            Some(std::mem::take(&mut slot.suppressed))
        } else {
            slot.suppressed += 1;
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_suppress_then_report_the_count() {
        let t0 = Instant::now();
        let mut r = RateLimit::new(Duration::from_secs(1), 2);
        assert_eq!(r.allow((), t0), Some(0));
        assert_eq!(r.allow((), t0), Some(0));
        assert_eq!(r.allow((), t0), None);
        assert_eq!(r.allow((), t0 + Duration::from_millis(999)), None);
        assert_eq!(r.allow((), t0 + Duration::from_secs(1)), Some(2));
        assert_eq!(r.allow((), t0 + Duration::from_secs(1)), Some(0));
    }

    #[test]
    fn keys_are_independent_and_bounded() {
        let t0 = Instant::now();
        let mut r = RateLimit::new(Duration::from_secs(10), 1);
        assert_eq!(r.allow(1u32, t0), Some(0));
        assert_eq!(r.allow(2u32, t0), Some(0));
        assert_eq!(r.allow(1u32, t0), None);
        for k in 0..5000u32 {
            r.allow(k + 10, t0);
        }
        assert!(r.keys.len() <= 1024);
    }
}
