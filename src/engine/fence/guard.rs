//! Process-wide defences shared by every fence listener (created once in
//! [`listeners::spawn`](super::listeners::spawn)):
//!
//! - [`Record`] (pure, in `fenceline_proto::replay`): a digest of every verified request, kept [`RECORD_LIFETIME`]
//!   in a bounded LRU, so an exact copy of a request (a replay, on the same
//!   or another listener, 1 s or 50 min later) is refused. fence_xvm and
//!   fence_virt sign every packet with fresh random bytes, retransmissions
//!   included, so a real client never sends the same bytes twice.
//! - [`Challenges`]: the daemon challenges still waiting for an answer; a
//!   client challenge equal to one of them is a reflection (an attempt to
//!   make us compute the answer to our own challenge) and is refused.
//! - [`callback_allowed`]: where a multicast connect-back may go.
//!
//! Pure except for the mutexes and the record's epoch: the caller passes
//! the time in.

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use fenceline_proto::cidr::Cidr;
use fenceline_proto::fence_xvm::{CHALLENGE_LEN, REQ_LEN};
pub use fenceline_proto::replay::{Admit, Digest, RECORD_CAP, RECORD_LIFETIME, Record, digest};

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
#[derive(Debug)]
pub struct Guard {
    pub record: Mutex<Record>,
    pub challenges: Challenges,
    /// The record's time zero.
    epoch: Instant,
}

impl Default for Guard {
    fn default() -> Self {
        Self {
            record: Mutex::default(),
            challenges: Challenges::default(),
            epoch: Instant::now(),
        }
    }
}

impl Guard {
    /// [`Record::admit`] under the lock.
    pub fn admit(&self, raw: &[u8; REQ_LEN], now: Instant) -> (Admit, usize, u64) {
        let mut r = self.record.lock().unwrap_or_else(PoisonError::into_inner);
        let a = r.admit(digest(raw), now.saturating_duration_since(self.epoch));
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
