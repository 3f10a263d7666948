//! Process-wide defences shared by every fence listener (created once in
//! [`listeners::spawn`](super::listeners::spawn)):
//!
//! - [`Record`]: a digest of every verified request, kept [`RECORD_LIFETIME`]
//!   in a bounded LRU, so an exact copy of a request (a replay, on the same
//!   or another listener, 1 s or 50 min later) is refused. fence_xvm and
//!   fence_virt sign every packet with fresh random bytes, retransmissions
//!   included, so a real client never sends the same bytes twice.
//! - [`Challenges`]: the daemon challenges still waiting for an answer; a
//!   client challenge equal to one of them is a reflection (an attempt to
//!   make us compute the answer to our own challenge) and is refused.
//! - [`callback_allowed`]: where a multicast connect-back may go.
//!
//! Pure except for the mutexes: the caller passes the time in.

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use fenceline_proto::cidr::Cidr;
use fenceline_proto::fence_xvm::{CHALLENGE_LEN, HashType, REQ_LEN};

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
    seen: HashMap<Digest, Instant>,
    order: VecDeque<(Digest, Instant)>,
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

    /// Refuses a repeat; records anything new.
    pub fn admit(&mut self, d: Digest, now: Instant) -> Admit {
        self.expire(now);
        if let Some(t) = self.seen.get(&d) {
            return Admit::Replay {
                age: now.saturating_duration_since(*t),
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

    fn expire(&mut self, now: Instant) {
        while let Some((d, t)) = self.order.front() {
            if now.saturating_duration_since(*t) <= self.lifetime {
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

/// The daemon challenges sent and not yet answered, across all listeners.
#[derive(Debug, Default, Clone)]
pub struct Challenges {
    inner: Arc<Mutex<HashSet<[u8; CHALLENGE_LEN]>>>,
}

/// Removes its challenge from the set when dropped.
#[derive(Debug)]
pub struct Outstanding {
    set: Challenges,
    c: [u8; CHALLENGE_LEN],
}

impl Drop for Outstanding {
    fn drop(&mut self) {
        self.set.lock().remove(&self.c);
    }
}

impl Challenges {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashSet<[u8; CHALLENGE_LEN]>> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether `c` is one of our outstanding challenges.
    pub fn is_ours(&self, c: &[u8; CHALLENGE_LEN]) -> bool {
        self.lock().contains(c)
    }

    /// Marks `c` outstanding until the returned guard is dropped.
    pub fn issue(&self, c: [u8; CHALLENGE_LEN]) -> Outstanding {
        self.lock().insert(c);
        Outstanding {
            set: self.clone(),
            c,
        }
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }
}

/// Everything the listeners share.
#[derive(Debug, Default)]
pub struct Guard {
    pub record: Mutex<Record>,
    pub challenges: Challenges,
}

impl Guard {
    /// [`Record::admit`] under the lock.
    pub fn admit(&self, raw: &[u8; REQ_LEN], now: Instant) -> (Admit, usize, u64) {
        let mut r = self.record.lock().unwrap_or_else(PoisonError::into_inner);
        let a = r.admit(digest(raw), now);
        (a, r.len(), r.evictions())
    }
}

/// Whether a multicast connect-back may go to `to`. Never: port 0, the
/// unspecified address, multicast, IPv4 broadcast. Loopback and link-local
/// only when an allow-list entry that is itself loopback / link-local
/// names them (a test lab on one host; `0.0.0.0/0` does not count). With
/// an allow-list, nothing outside it. IPv4-mapped IPv6 counts as IPv4.
pub fn callback_allowed(to: SocketAddr, allow: &[Cidr]) -> Result<(), String> {
    let ip = to.ip().to_canonical();
    if to.port() == 0 {
        return Err(format!("{to}: port 0"));
    }
    if ip.is_unspecified() {
        return Err(format!("{ip} is the unspecified address"));
    }
    if ip.is_multicast() {
        return Err(format!("{ip} is a multicast address"));
    }
    if let IpAddr::V4(v4) = ip
        && v4.is_broadcast()
    {
        return Err(format!("{ip} is the broadcast address"));
    }
    let link_local = match ip {
        IpAddr::V4(v4) => v4.is_link_local(),
        IpAddr::V6(v6) => v6.segments()[0] & 0xffc0 == 0xfe80,
    };
    if ip.is_loopback() {
        if !allow.iter().any(|c| c.is_loopback() && c.contains(ip)) {
            return Err(format!(
                "{ip} is a loopback address (allowed only when callback_networks names a loopback network)"
            ));
        }
    } else if link_local {
        if !allow.iter().any(|c| c.is_link_local() && c.contains(ip)) {
            return Err(format!(
                "{ip} is a link-local address (allowed only when callback_networks names a link-local network)"
            ));
        }
    } else if !allow.is_empty() && !allow.iter().any(|c| c.contains(ip)) {
        return Err(format!(
            "{ip} is outside listeners.multicast.callback_networks"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(n: u8) -> Digest {
        [n; 32]
    }

    #[test]
    fn an_exact_repeat_is_a_replay_for_the_whole_lifetime() {
        let t0 = Instant::now();
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
        let t0 = Instant::now();
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
        let t0 = Instant::now();
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

    #[test]
    fn challenges_are_outstanding_until_dropped() {
        let c = Challenges::default();
        let g = c.issue([5; 64]);
        assert!(c.is_ours(&[5; 64]) && !c.is_ours(&[6; 64]));
        let other = c.clone();
        assert!(other.is_ours(&[5; 64]), "one set shared by clones");
        drop(g);
        assert!(!c.is_ours(&[5; 64]) && c.is_empty());
    }

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn callback_destinations() {
        let none: &[Cidr] = &[];
        assert!(callback_allowed(sa("10.0.0.5:1229"), none).is_ok());
        assert!(callback_allowed(sa("[fd00::5]:1229"), none).is_ok());
        for bad in [
            "127.0.0.1:1229",
            "127.9.9.9:22",
            "[::1]:1229",
            "[::ffff:127.0.0.1]:1229",
            "0.0.0.0:1229",
            "[::]:1229",
            "[::ffff:0.0.0.0]:1229",
            "224.0.0.1:1229",
            "225.0.0.12:1229",
            "[ff02::1]:1229",
            "[::ffff:225.0.0.12]:1229",
            "255.255.255.255:1229",
            "[::ffff:255.255.255.255]:1229",
            "169.254.169.254:80",
            "[fe80::1]:1229",
            "10.0.0.5:0",
        ] {
            assert!(callback_allowed(sa(bad), none).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_allow_list_narrows_and_only_names_loopback_explicitly() {
        let allow = [
            Cidr::parse("10.0.0.0/24").unwrap(),
            Cidr::parse("fd00:1::/64").unwrap(),
        ];
        assert!(callback_allowed(sa("10.0.0.9:1229"), &allow).is_ok());
        assert!(callback_allowed(sa("[::ffff:10.0.0.9]:1229"), &allow).is_ok());
        assert!(callback_allowed(sa("[fd00:1::9]:1229"), &allow).is_ok());
        let e = callback_allowed(sa("192.168.1.1:22"), &allow).unwrap_err();
        assert!(e.contains("callback_networks"), "{e}");
        assert!(callback_allowed(sa("127.0.0.1:1229"), &allow).is_err());
        let everything = [Cidr::parse("0.0.0.0/0").unwrap()];
        assert!(callback_allowed(sa("127.0.0.1:1229"), &everything).is_err());
        assert!(callback_allowed(sa("169.254.1.1:1229"), &everything).is_err());
        assert!(callback_allowed(sa("255.255.255.255:1229"), &everything).is_err());
        let lo = [Cidr::parse("127.0.0.1").unwrap()];
        assert!(callback_allowed(sa("127.0.0.1:1229"), &lo).is_ok());
        assert!(callback_allowed(sa("127.0.0.2:1229"), &lo).is_err());
        assert!(callback_allowed(sa("10.0.0.9:1229"), &lo).is_err());
    }
}
