//! The listeners' defences as state machines, driven by a keyless attacker:
//! up to four concurrent daemon handshakes sharing one set of outstanding
//! challenges (`fenceline_proto::handshake::DaemonSide`, as
//! `engine/fence/auth.rs` runs them), plus the replay record
//! (`fenceline_proto::replay::Record`) under arbitrary digests and clock
//! steps. The input is a script of operations; the attacker may send any
//! bytes, and may also reuse every frame a daemon sent on any connection
//! (reflection and cross-connection relay).
//!
//! Properties (a panic is a finding):
//! - a handshake passes only with the exact answer to its own challenge,
//!   and never for the keyless attacker (who cannot compute SHA(key ‖ c));
//! - a challenge that is outstanding on another connection gets no answer;
//! - the replay record matches a naive reference model: a repeat within
//!   the lifetime that was not evicted is a replay, the size never exceeds
//!   the cap, evictions are counted.
#![no_main]

use std::collections::VecDeque;
use std::time::Duration;

use fenceline_proto::fence_xvm::{HashType, response};
use fenceline_proto::handshake::{DaemonSide, Failure, Frame};
use fenceline_proto::replay::{Admit, Digest, Record};
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

fuzz_target!(|data: &[u8]| {
    let mut input = Bytes(data);
    let mut conns: Vec<Conn> = Vec::new();
    // Every frame any daemon sent: the attacker's knowledge.
    let mut seen: Vec<Frame> = Vec::new();
    let mut record = Record::new(LIFETIME, CAP);
    let mut reference: VecDeque<(Digest, Duration)> = VecDeque::new();
    let mut evictions = 0u64;
    let mut now = Duration::ZERO;

    while let Some(op) = input.byte() {
        let pick = usize::from(input.byte().unwrap_or(0));
        match op % 5 {
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
            _ => {
                now += Duration::from_millis(u64::from(input.byte().unwrap_or(0)) * 100);
                let d: Digest = [(pick % 8) as u8; 32];
                let got = record.admit(d, now);
                while reference
                    .front()
                    .is_some_and(|(_, t)| now.saturating_sub(*t) > LIFETIME)
                {
                    reference.pop_front();
                }
                let want = if let Some((_, t)) = reference.iter().find(|(x, _)| *x == d) {
                    Admit::Replay { age: now - *t }
                } else if reference.len() >= CAP {
                    reference.pop_front();
                    reference.push_back((d, now));
                    evictions += 1;
                    Admit::NewEvicting
                } else {
                    reference.push_back((d, now));
                    Admit::New
                };
                assert_eq!(got, want);
                assert_eq!(
                    (record.len(), record.evictions()),
                    (reference.len(), evictions)
                );
                assert!(record.len() <= CAP);
            }
        }
    }
});
