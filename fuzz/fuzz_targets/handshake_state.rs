//! The listeners' defences as state machines, driven by a keyless attacker:
//! up to four concurrent daemon handshakes sharing one set of outstanding
//! challenges (`fenceline_proto::handshake::DaemonSide`, as
//! `engine/fence/auth.rs` runs them), datagrams (a victim's signed requests,
//! captured and replayed, or any bytes) through verification and the replay
//! record (`fenceline_proto::replay::Record`), and the record itself under
//! arbitrary digests and clock steps. The input is a script of operations; the attacker may send any
//! bytes, and may also reuse every frame a daemon sent on any connection
//! (reflection and cross-connection relay).
//!
//! Properties (a panic is a finding):
//! - a handshake passes only with the exact answer to its own challenge,
//!   and never for the keyless attacker (who cannot compute SHA(key ‖ c));
//! - a challenge that is outstanding on another connection gets no answer;
//! - a datagram verifies only if the victim signed it (nothing forged);
//! - the replay record matches a naive reference model: a repeat within
//!   the lifetime that was not evicted is a replay, the size never exceeds
//!   the cap, evictions are counted.
#![no_main]

use std::collections::VecDeque;
use std::time::Duration;

use fenceline_proto::api::FenceOp;
use fenceline_proto::fence_xvm::{self, FenceRequest, HashType, REQ_LEN, response};
use fenceline_proto::handshake::{DaemonSide, Failure, Frame};
use fenceline_proto::replay::{Admit, Digest, Record, digest};
use libfuzzer_sys::fuzz_target;

const KEY: &[u8] = b"the attacker never sees this key";
const CAP: usize = 4;
const LIFETIME: Duration = Duration::from_secs(10);

struct Conn {
    m: DaemonSide<'static>,
    ours: Option<Frame>,
}

struct Bytes<'a>(&'a [u8]);

impl Bytes<'_> {
    fn byte(&mut self) -> Option<u8> {
        let (&b, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(b)
    }

    fn frame(&mut self) -> Frame {
        let mut f = [0u8; 64];
        let n = self.0.len().min(64);
        f[..n].copy_from_slice(&self.0[..n]);
        self.0 = &self.0[n..];
        f
    }
}

/// The daemon's fresh challenges. They must be unpredictable to the
/// fuzzer as they are to a real attacker: a deterministic sequence would be
/// learned through libFuzzer's comparison tracing across runs (it was: the
/// "attacker" then pre-computed answers). Randomly keyed SipHash per run.
fn fresh() -> Frame {
    use std::hash::{BuildHasher, Hasher};
    let seed = std::collections::hash_map::RandomState::new();
    let mut f = [0u8; 64];
    for (i, chunk) in f.chunks_exact_mut(8).enumerate() {
        let mut h = seed.build_hasher();
        h.write_usize(i);
        chunk.copy_from_slice(&h.finish().to_le_bytes());
    }
    f
}

/// The replay record and its naive reference model, side by side.
struct Replays {
    record: Record,
    reference: VecDeque<(Digest, Duration)>,
    evictions: u64,
}

impl Replays {
    /// Admits `d` at `now` in both and checks they agree.
    fn admit(&mut self, d: Digest, now: Duration) -> Admit {
        let got = self.record.admit(d, now);
        while self
            .reference
            .front()
            .is_some_and(|(_, t)| now.saturating_sub(*t) > LIFETIME)
        {
            self.reference.pop_front();
        }
        let want = if let Some((_, t)) = self.reference.iter().find(|(x, _)| *x == d) {
            Admit::Replay { age: now - *t }
        } else if self.reference.len() >= CAP {
            self.reference.pop_front();
            self.reference.push_back((d, now));
            self.evictions += 1;
            Admit::NewEvicting
        } else {
            self.reference.push_back((d, now));
            Admit::New
        };
        assert_eq!(got, want);
        assert_eq!(
            (self.record.len(), self.record.evictions()),
            (self.reference.len(), self.evictions)
        );
        assert!(self.record.len() <= CAP);
        got
    }
}

/// A victim's fence_xvm request, signed with the key and fresh random bytes.
fn victim_packet(seq: u32) -> [u8; REQ_LEN] {
    let mut r = FenceRequest::new(FenceOp::Off, "victim", seq).expect("request");
    let mut random = [0u8; 6];
    random.copy_from_slice(&fresh()[..6]);
    r.sign(KEY, HashType::Sha256, random).expect("sign");
    r.encode().expect("encode")
}

fuzz_target!(|data: &[u8]| {
    let mut input = Bytes(data);
    let mut conns: Vec<Conn> = Vec::new();
    // Every frame any daemon sent: the attacker's knowledge.
    let mut seen: Vec<Frame> = Vec::new();
    let mut replays = Replays {
        record: Record::new(LIFETIME, CAP),
        reference: VecDeque::new(),
        evictions: 0,
    };
    // Every signed packet the victim sent: the attacker captured them all.
    let mut victim: Vec<[u8; REQ_LEN]> = Vec::new();
    let mut now = Duration::ZERO;

    while let Some(op) = input.byte() {
        let pick = usize::from(input.byte().unwrap_or(0));
        match op % 6 {
            0 if conns.len() < 4 => conns.push(Conn {
                m: DaemonSide::new(HashType::Sha256, KEY),
                ours: None,
            }),
            1 | 2 if !conns.is_empty() => {
                let i = pick % conns.len();
                // Any bytes, or a frame some daemon sent.
                let frame = match input.byte() {
                    Some(k) if k % 2 == 1 && !seen.is_empty() => seen[usize::from(k) % seen.len()],
                    _ => input.frame(),
                };
                let outstanding: Vec<Frame> = conns.iter().filter_map(|c| c.ours).collect();
                let c = &mut conns[i];
                if op % 5 == 1 {
                    let reflected = outstanding.contains(&frame);
                    let drawn = fresh();
                    match c.m.on_challenge(&frame, reflected, drawn) {
                        Ok((answer, ours)) => {
                            assert!(!reflected, "answered an outstanding challenge");
                            assert_eq!(answer, response(HashType::Sha256, KEY, &frame));
                            c.ours = Some(ours);
                            seen.push(answer);
                            seen.push(ours);
                        }
                        Err(Failure::Reflected) => assert!(reflected || frame == drawn),
                        Err(f) => assert_eq!(f, Failure::OutOfTurn),
                    }
                } else {
                    let r = c.m.on_answer(&frame);
                    if let Some(ours) = c.ours.take() {
                        let right = frame == response(HashType::Sha256, KEY, &ours);
                        assert_eq!(r.is_ok(), right);
                        assert!(r.is_err(), "a keyless peer passed the handshake");
                    } else {
                        assert_eq!(r, Err(Failure::OutOfTurn));
                    }
                    assert!(!c.m.passed());
                }
            }
            3 if !conns.is_empty() => {
                // The connection closes: its challenge is no longer outstanding.
                conns.swap_remove(pick % conns.len());
            }
            4 => {
                // A datagram: the victim's next request, a captured one
                // replayed, or any 176 bytes.
                now += Duration::from_millis(u64::from(input.byte().unwrap_or(0)) * 100);
                let raw: [u8; REQ_LEN] = match pick % 3 {
                    0 => {
                        let p = victim_packet(victim.len() as u32);
                        victim.push(p);
                        p
                    }
                    1 if !victim.is_empty() => victim[pick % victim.len()],
                    _ => {
                        let mut b = [0u8; REQ_LEN];
                        for x in b.iter_mut() {
                            *x = input.byte().unwrap_or(0);
                        }
                        b
                    }
                };
                let forged = !victim.contains(&raw);
                match fence_xvm::verify(&raw, Some(KEY), HashType::Sha256) {
                    Ok(()) => {
                        assert!(!forged, "a datagram without the key verified");
                        // Admitted once; a copy is a replay until it ages
                        // out or the bounded record evicts it (both counted
                        // by the reference model).
                        replays.admit(digest(&raw), now);
                    }
                    Err(_) => assert!(forged, "a victim's packet failed to verify"),
                }
            }
            _ => {
                now += Duration::from_millis(u64::from(input.byte().unwrap_or(0)) * 100);
                replays.admit([(pick % 8) as u8; 32], now);
            }
        }
    }
});
