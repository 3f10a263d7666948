//! The two-way challenge/response that follows every fence_xvm / fence_virt
//! request (fence-virt-protocol.md §2.2), for both sides: the I/O around
//! the pure state machines of `fenceline_proto::handshake`.
//!
//! The client always challenges first: it sends 64 random bytes, the daemon
//! answers SHA-x(key ‖ challenge) zero-padded to 64 bytes; then the daemon
//! sends its own 64 random bytes and checks the client's answer. With
//! `HashType::None` both sides skip all of it. Every read and write has its
//! own deadline (fence_virtd allows 10 s each).

use std::time::Duration;

use rand::RngCore;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::guard::Challenges;
use fenceline_proto::fence_xvm::{CHALLENGE_LEN, HashType};
use fenceline_proto::handshake::{ClientSide, DaemonSide, Failure};

/// fence_virtd's limit for each read or write of the handshake.
pub const AUTH_IO_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a handshake failed.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("{0} timed out")]
    Timeout(&'static str),
    #[error("{what}: {source}")]
    Io {
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
    /// The peer's answer to our challenge was wrong: it does not have the key
    /// (or uses another auth hash).
    #[error("the peer failed our challenge (wrong key or auth hash)")]
    PeerFailed,
    /// Our answer was refused (client side only): the daemon has another key.
    #[error("the daemon's answer to our challenge is wrong (wrong key or auth hash)")]
    DaemonFailed,
    /// The client's challenge is one of our own outstanding challenges: an
    /// attempt to have us answer it for another connection (reflection).
    #[error("the client's challenge is one of our own outstanding challenges (reflection)")]
    Reflected,
}

impl From<Failure> for AuthError {
    fn from(f: Failure) -> Self {
        match f {
            Failure::PeerFailed => AuthError::PeerFailed,
            Failure::DaemonFailed => AuthError::DaemonFailed,
            Failure::Reflected => AuthError::Reflected,
            // The drivers below call the machines strictly in turn; a
            // failure of that kind is our bug, never a passed handshake.
            Failure::OutOfTurn => AuthError::Io {
                what: "the handshake",
                source: std::io::Error::other("frame out of turn"),
            },
        }
    }
}

async fn read64<S: AsyncRead + Unpin>(
    s: &mut S,
    what: &'static str,
    limit: Duration,
) -> Result<[u8; CHALLENGE_LEN], AuthError> {
    let mut b = [0u8; CHALLENGE_LEN];
    match tokio::time::timeout(limit, s.read_exact(&mut b)).await {
        Ok(Ok(_)) => Ok(b),
        Ok(Err(source)) => Err(AuthError::Io { what, source }),
        Err(_) => Err(AuthError::Timeout(what)),
    }
}

async fn write64<S: AsyncWrite + Unpin>(
    s: &mut S,
    what: &'static str,
    b: &[u8; 64],
    limit: Duration,
) -> Result<(), AuthError> {
    let io = async {
        s.write_all(b).await?;
        s.flush().await
    };
    match tokio::time::timeout(limit, io).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(source)) => Err(AuthError::Io { what, source }),
        Err(_) => Err(AuthError::Timeout(what)),
    }
}

fn challenge() -> [u8; CHALLENGE_LEN] {
    let mut c = [0u8; CHALLENGE_LEN];
    // ThreadRng is a CSPRNG seeded (and periodically reseeded) from the OS.
    rand::rng().fill_bytes(&mut c);
    c
}

/// The daemon's side: answer the client's challenge, then challenge it.
/// `limit` applies to each read and write ([`AUTH_IO_TIMEOUT`] in the
/// listeners). Checks reflection against this call's own challenge only;
/// the listeners use [`daemon_handshake_guarded`] with the process-wide set.
pub async fn daemon_handshake<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut S,
    auth: HashType,
    key: &[u8],
    limit: Duration,
) -> Result<(), AuthError> {
    daemon_handshake_guarded(s, auth, key, limit, &Challenges::default()).await
}

/// [`daemon_handshake`], refusing a client challenge that is one of the
/// `outstanding` daemon challenges (ours are added there from before they
/// are sent until the answer is read or the handshake ends).
pub async fn daemon_handshake_guarded<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut S,
    auth: HashType,
    key: &[u8],
    limit: Duration,
    outstanding: &Challenges,
) -> Result<(), AuthError> {
    let mut m = DaemonSide::new(auth, key);
    if m.passed() {
        return Ok(());
    }
    let theirs = read64(s, "reading the client's challenge", limit).await?;
    let fresh = challenge();
    let (answer, ours) = m.on_challenge(&theirs, outstanding.is_ours(&theirs), fresh)?;
    write64(s, "answering the client's challenge", &answer, limit).await?;
    let _pending = outstanding.issue(ours);
    write64(s, "sending our challenge", &ours, limit).await?;
    let reply = read64(s, "reading the client's answer", limit).await?;
    Ok(m.on_answer(&reply)?)
}

/// The client's side (fence_xvm's order): challenge the daemon, check its
/// answer, then answer its challenge. Used by tests and tools.
pub async fn client_handshake<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut S,
    auth: HashType,
    key: &[u8],
    limit: Duration,
) -> Result<(), AuthError> {
    let (mut m, first) = ClientSide::new(auth, key, challenge());
    let Some(ours) = first else {
        return Ok(());
    };
    write64(s, "sending our challenge", &ours, limit).await?;
    let answer = read64(s, "reading the daemon's answer", limit).await?;
    m.on_answer(&answer)?;
    let theirs = read64(s, "reading the daemon's challenge", limit).await?;
    let reply = m.on_challenge(&theirs)?;
    write64(s, "answering the daemon's challenge", &reply, limit).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use fenceline_proto::fence_xvm::response;

    const KEY: &[u8] = b"0123456789abcdef";
    const SHORT: Duration = Duration::from_millis(300);

    #[tokio::test]
    async fn both_sides_agree_for_every_hash() {
        for ht in [HashType::Sha1, HashType::Sha256, HashType::Sha512] {
            let (mut a, mut b) = tokio::io::duplex(1024);
            let (d, c) = tokio::join!(
                daemon_handshake(&mut a, ht, KEY, SHORT),
                client_handshake(&mut b, ht, KEY, SHORT)
            );
            d.unwrap();
            c.unwrap();
        }
    }

    #[tokio::test]
    async fn wrong_key_fails_on_both_sides() {
        let (mut a, mut b) = tokio::io::duplex(1024);
        let (d, c) = tokio::join!(
            daemon_handshake(&mut a, HashType::Sha256, KEY, SHORT),
            client_handshake(&mut b, HashType::Sha256, b"another key", SHORT)
        );
        // The client sees the daemon's answer is wrong and stops; the daemon
        // then waits for an answer that never comes (or sees the close).
        assert!(matches!(c, Err(AuthError::DaemonFailed)), "{c:?}");
        assert!(d.is_err());
    }

    #[tokio::test]
    async fn a_client_that_cannot_answer_fails_the_daemon_check() {
        // A hand-written client: it checks nothing and answers with zeros.
        let (mut a, mut b) = tokio::io::duplex(1024);
        let client = async move {
            b.write_all(&[7u8; 64]).await.unwrap();
            let mut ans = [0u8; 64];
            b.read_exact(&mut ans).await.unwrap();
            assert_eq!(ans, response(HashType::Sha256, KEY, &[7u8; 64]));
            let mut ch = [0u8; 64];
            b.read_exact(&mut ch).await.unwrap();
            b.write_all(&[0u8; 64]).await.unwrap();
            b
        };
        let (d, _b) = tokio::join!(
            daemon_handshake(&mut a, HashType::Sha256, KEY, SHORT),
            client
        );
        assert!(matches!(d, Err(AuthError::PeerFailed)), "{d:?}");
    }

    #[tokio::test]
    async fn reference_vector_answer_is_sent() {
        // fence-virt-protocol.md §2.2: key 0123456789abcdef, challenge 0x00..0x3f.
        let mut c = [0u8; 64];
        for (i, x) in c.iter_mut().enumerate() {
            *x = i as u8;
        }
        let (mut a, mut b) = tokio::io::duplex(1024);
        let client = async move {
            b.write_all(&c).await.unwrap();
            let mut ans = [0u8; 64];
            b.read_exact(&mut ans).await.unwrap();
            drop(b);
            ans
        };
        let (_d, ans) = tokio::join!(
            daemon_handshake(&mut a, HashType::Sha256, KEY, SHORT),
            client
        );
        let want = "74f1d96ec68a0a2508a507c6d0c1ed0daee1cf2a221624f501c4a8473fd382f2";
        let hex: String = ans[..32].iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(hex, want);
        assert_eq!(ans[32..], [0u8; 32]);
    }

    #[tokio::test]
    async fn a_reflected_challenge_gets_no_answer() {
        // Connection A is waiting for the answer to our challenge; the
        // attacker offers that challenge as its own on connection B.
        let set = Challenges::default();
        let (mut a, mut a_peer) = tokio::io::duplex(1024);
        let (mut b, mut b_peer) = tokio::io::duplex(1024);
        let set_a = set.clone();
        let conn_a = tokio::spawn(async move {
            daemon_handshake_guarded(&mut a, HashType::Sha256, KEY, SHORT, &set_a).await
        });
        a_peer.write_all(&[3u8; 64]).await.unwrap();
        let mut buf = [0u8; 64];
        a_peer.read_exact(&mut buf).await.unwrap();
        let mut ours = [0u8; 64];
        a_peer.read_exact(&mut ours).await.unwrap();
        assert!(set.is_ours(&ours));
        b_peer.write_all(&ours).await.unwrap();
        let r = daemon_handshake_guarded(&mut b, HashType::Sha256, KEY, SHORT, &set).await;
        assert!(matches!(r, Err(AuthError::Reflected)), "{r:?}");
        // Nothing was written on B.
        drop(b);
        let mut rest = Vec::new();
        b_peer.read_to_end(&mut rest).await.unwrap();
        assert!(rest.is_empty());
        // A fails (no answer) and its challenge leaves the set.
        drop(a_peer);
        assert!(conn_a.await.unwrap().is_err());
        assert!(set.is_empty());
    }

    #[tokio::test]
    async fn silent_peer_times_out() {
        let (mut a, _b) = tokio::io::duplex(1024);
        let t0 = std::time::Instant::now();
        let r = daemon_handshake(&mut a, HashType::Sha256, KEY, Duration::from_millis(100)).await;
        assert!(matches!(r, Err(AuthError::Timeout(_))), "{r:?}");
        assert!(t0.elapsed() < Duration::from_secs(2));
    }

    #[tokio::test]
    async fn closed_peer_is_an_io_error() {
        let (mut a, b) = tokio::io::duplex(1024);
        drop(b);
        let r = daemon_handshake(&mut a, HashType::Sha256, KEY, SHORT).await;
        assert!(matches!(r, Err(AuthError::Io { .. })), "{r:?}");
    }

    #[tokio::test]
    async fn none_skips_everything() {
        let (mut a, mut b) = tokio::io::duplex(1024);
        daemon_handshake(&mut a, HashType::None, KEY, SHORT)
            .await
            .unwrap();
        client_handshake(&mut b, HashType::None, KEY, SHORT)
            .await
            .unwrap();
        // Nothing was written either way.
        a.write_all(b"x").await.unwrap();
        let mut one = [0u8; 1];
        b.read_exact(&mut one).await.unwrap();
        assert_eq!(&one, b"x");
    }
}
