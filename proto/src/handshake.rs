//! The challenge/response that follows every fence_xvm / fence_virt request
//! (fence-virt-protocol.md §2.2) as two sans-I/O state machines, one per
//! side. `engine/fence/auth.rs` moves their 64-byte frames over a socket
//! with deadlines; the fuzz target `handshake_state` feeds them frames in
//! any order.
//!
//! The client challenges first; the daemon answers SHA-x(key ‖ challenge)
//! zero-padded to 64 bytes, then sends its own challenge and checks the
//! client's answer. With [`HashType::None`] both sides are done at once.
//! The daemon refuses to answer a challenge that is one of its own
//! outstanding ones (reflection: a keyless peer asking us to compute the
//! answer to a challenge we sent on another connection).

use crate::fence_xvm::{CHALLENGE_LEN, HashType, response, response_ok};

/// One frame of the handshake: a challenge or an answer.
pub type Frame = [u8; CHALLENGE_LEN];

/// Why a handshake failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// The client's answer to our challenge was wrong (daemon side).
    PeerFailed,
    /// The daemon's answer to our challenge was wrong (client side).
    DaemonFailed,
    /// The client's challenge is one of our outstanding challenges.
    Reflected,
    /// A frame arrived in a state that expects none (a caller bug or a
    /// peer speaking out of turn); the handshake is over.
    OutOfTurn,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Daemon {
    AwaitChallenge,
    AwaitAnswer(Frame),
    Passed,
    Failed,
}

/// The daemon's side.
#[derive(Debug, Clone)]
pub struct DaemonSide<'k> {
    auth: HashType,
    key: &'k [u8],
    state: Daemon,
}

impl<'k> DaemonSide<'k> {
    pub fn new(auth: HashType, key: &'k [u8]) -> Self {
        let state = if auth == HashType::None {
            Daemon::Passed
        } else {
            Daemon::AwaitChallenge
        };
        Self { auth, key, state }
    }

    /// Whether the client has proved it holds the key.
    pub fn passed(&self) -> bool {
        self.state == Daemon::Passed
    }

    /// The client's challenge arrived. `reflected` says whether it is one
    /// of this process's outstanding challenges; `ours` is the fresh
    /// challenge to send next (the caller draws it from a CSPRNG and marks
    /// it outstanding before sending). Returns the answer to send, then
    /// `ours`.
    pub fn on_challenge(
        &mut self,
        theirs: &Frame,
        reflected: bool,
        ours: Frame,
    ) -> Result<(Frame, Frame), Failure> {
        if self.state != Daemon::AwaitChallenge {
            return Err(self.fail(Failure::OutOfTurn));
        }
        if reflected || *theirs == ours {
            return Err(self.fail(Failure::Reflected));
        }
        self.state = Daemon::AwaitAnswer(ours);
        Ok((response(self.auth, self.key, theirs), ours))
    }

    /// The client's answer to our challenge arrived.
    pub fn on_answer(&mut self, answer: &Frame) -> Result<(), Failure> {
        let Daemon::AwaitAnswer(ours) = self.state else {
            return Err(self.fail(Failure::OutOfTurn));
        };
        if response_ok(self.auth, self.key, &ours, answer) {
            self.state = Daemon::Passed;
            Ok(())
        } else {
            Err(self.fail(Failure::PeerFailed))
        }
    }

    fn fail(&mut self, f: Failure) -> Failure {
        self.state = Daemon::Failed;
        f
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Client {
    AwaitAnswer(Frame),
    AwaitChallenge,
    Passed,
    Failed,
}

/// The client's side (fence_xvm's order).
#[derive(Debug, Clone)]
pub struct ClientSide<'k> {
    auth: HashType,
    key: &'k [u8],
    state: Client,
}

impl<'k> ClientSide<'k> {
    /// Starts with `ours`, the challenge to send first (unless the auth
    /// hash is `None`, when there is nothing to send).
    pub fn new(auth: HashType, key: &'k [u8], ours: Frame) -> (Self, Option<Frame>) {
        if auth == HashType::None {
            let done = Self {
                auth,
                key,
                state: Client::Passed,
            };
            return (done, None);
        }
        let s = Self {
            auth,
            key,
            state: Client::AwaitAnswer(ours),
        };
        (s, Some(ours))
    }

    /// Whether the daemon proved it holds the key and we answered it.
    pub fn passed(&self) -> bool {
        self.state == Client::Passed
    }

    /// The daemon's answer to our challenge arrived.
    pub fn on_answer(&mut self, answer: &Frame) -> Result<(), Failure> {
        let Client::AwaitAnswer(ours) = self.state else {
            return Err(self.fail(Failure::OutOfTurn));
        };
        if response_ok(self.auth, self.key, &ours, answer) {
            self.state = Client::AwaitChallenge;
            Ok(())
        } else {
            Err(self.fail(Failure::DaemonFailed))
        }
    }

    /// The daemon's challenge arrived; returns our answer to send.
    pub fn on_challenge(&mut self, theirs: &Frame) -> Result<Frame, Failure> {
        if self.state != Client::AwaitChallenge {
            return Err(self.fail(Failure::OutOfTurn));
        }
        self.state = Client::Passed;
        Ok(response(self.auth, self.key, theirs))
    }

    fn fail(&mut self, f: Failure) -> Failure {
        self.state = Client::Failed;
        f
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &[u8] = b"0123456789abcdef";

    fn run(auth: HashType, client_key: &[u8], daemon_key: &[u8]) -> (bool, bool) {
        let (mut c, first) = ClientSide::new(auth, client_key, [1; 64]);
        let mut d = DaemonSide::new(auth, daemon_key);
        let Some(first) = first else {
            return (c.passed(), d.passed());
        };
        let (answer, ours) = d.on_challenge(&first, false, [2; 64]).unwrap();
        if c.on_answer(&answer).is_err() {
            return (false, d.passed());
        }
        let reply = c.on_challenge(&ours).unwrap();
        let _ = d.on_answer(&reply);
        (c.passed(), d.passed())
    }

    #[test]
    fn both_sides_pass_with_one_key_for_every_hash() {
        for h in [HashType::Sha1, HashType::Sha256, HashType::Sha512] {
            assert_eq!(run(h, KEY, KEY), (true, true), "{h:?}");
            assert_eq!(run(h, KEY, b"other"), (false, false), "{h:?}");
        }
        assert_eq!(run(HashType::None, KEY, b"other"), (true, true));
    }

    #[test]
    fn a_reflected_or_echoed_challenge_gets_no_answer() {
        let mut d = DaemonSide::new(HashType::Sha256, KEY);
        assert_eq!(
            d.on_challenge(&[5; 64], true, [6; 64]),
            Err(Failure::Reflected)
        );
        assert!(!d.passed());
        let mut d = DaemonSide::new(HashType::Sha256, KEY);
        assert_eq!(
            d.on_challenge(&[6; 64], false, [6; 64]),
            Err(Failure::Reflected)
        );
    }

    #[test]
    fn frames_out_of_turn_end_the_handshake() {
        let mut d = DaemonSide::new(HashType::Sha256, KEY);
        assert_eq!(d.on_answer(&[0; 64]), Err(Failure::OutOfTurn));
        assert_eq!(
            d.on_challenge(&[1; 64], false, [2; 64]),
            Err(Failure::OutOfTurn),
            "a failed handshake stays failed"
        );
        let (mut c, _) = ClientSide::new(HashType::Sha256, KEY, [1; 64]);
        assert_eq!(c.on_challenge(&[0; 64]), Err(Failure::OutOfTurn));
        assert!(!c.passed());
    }
}
