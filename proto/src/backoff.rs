//! The one exponential backoff with jitter. Every reconnect and retry loop
//! (corosync, libvirt, the console's daemon connection, accept loops, the
//! lab's command retries) takes its delays from a [`Backoff`], so "every
//! reconnect backs off" is a property of one type.
//!
//! Pure: the caller sleeps and reads the clock; the jitter comes from a
//! small seeded generator (not security relevant), so a seed reproduces the
//! sequence in tests.

use std::time::Duration;

/// Exponential backoff: `initial`, doubling up to `max`, each delay scaled
/// by a factor in `[1 - jitter, 1 + jitter)`.
#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    current: Duration,
    jitter: f64,
    rng: u64,
}

impl Backoff {
    /// `initial` is raised to at least 1 ms and `max` to at least
    /// `initial`. Jitter defaults to ±20 %.
    pub fn new(initial: Duration, max: Duration, seed: u64) -> Self {
        let initial = initial.max(Duration::from_millis(1));
        Self {
            initial,
            max: max.max(initial),
            current: initial,
            jitter: 0.2,
            rng: splitmix(seed) | 1,
        }
    }

    /// The same, seeded from the process id, the clock's sub-second part
    /// and the address of a stack value (enough to keep hosts that restart
    /// together from retrying in lock-step).
    pub fn with_entropy(initial: Duration, max: Duration) -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        let local = 0u8;
        let addr = &local as *const u8 as u64;
        Self::new(
            initial,
            max,
            nanos ^ u64::from(std::process::id()).rotate_left(32) ^ addr,
        )
    }

    /// Jitter fraction in `[0, 0.5]` (0 gives exact doubling).
    pub fn jitter(mut self, fraction: f64) -> Self {
        self.jitter = if fraction.is_finite() {
            fraction.clamp(0.0, 0.5)
        } else {
            0.0
        };
        self
    }

    /// Back to the first delay (after a connection that lived long enough).
    pub fn reset(&mut self) {
        self.current = self.initial;
    }

    /// The delay the next `next_delay` is based on (before jitter).
    pub fn current(&self) -> Duration {
        self.current
    }

    /// The next delay to wait, and doubles the base for the one after.
    pub fn next_delay(&mut self) -> Duration {
        let d = self
            .current
            .mul_f64(1.0 - self.jitter + 2.0 * self.jitter * self.unit());
        self.current = self.current.saturating_mul(2).min(self.max);
        d
    }

    /// Uniform in [0, 1): xorshift64* (53 bits).
    fn unit(&mut self) -> f64 {
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        let r = self.rng.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 11;
        r as f64 / (1u64 << 53) as f64
    }
}

fn splitmix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn doubles_to_the_cap_within_the_jitter() {
        let mut b = Backoff::new(200 * MS, 5000 * MS, 7);
        let mut base = 200.0;
        for _ in 0..12 {
            let d = b.next_delay().as_secs_f64() * 1000.0;
            assert!(
                d >= base * 0.8 - 0.001 && d < base * 1.2 + 0.001,
                "{d} vs {base}"
            );
            base = (base * 2.0_f64).min(5000.0);
        }
        assert_eq!(b.current(), 5000 * MS);
    }

    #[test]
    fn reset_starts_over_and_zero_jitter_is_exact() {
        let mut b = Backoff::new(10 * MS, 1000 * MS, 1).jitter(0.0);
        assert_eq!(b.next_delay(), 10 * MS);
        assert_eq!(b.next_delay(), 20 * MS);
        b.reset();
        assert_eq!(b.next_delay(), 10 * MS);
    }

    #[test]
    fn a_seed_reproduces_the_sequence_and_seeds_differ() {
        let run = |seed| {
            let mut b = Backoff::new(100 * MS, 10_000 * MS, seed);
            (0..8).map(|_| b.next_delay()).collect::<Vec<_>>()
        };
        assert_eq!(run(42), run(42));
        assert_ne!(run(42), run(43));
    }

    #[test]
    fn degenerate_settings_are_clamped() {
        let mut b = Backoff::new(Duration::ZERO, Duration::ZERO, 0).jitter(f64::NAN);
        assert_eq!(b.next_delay(), MS);
        assert_eq!(b.next_delay(), MS);
        let b = Backoff::new(MS, MS, 0).jitter(9.0);
        assert!(b.jitter <= 0.5);
    }
}
