//! The cluster key's envelope (`fenceline_proto::seal`): arbitrary bytes
//! never open and never panic; any payload sealed for a sender opens to
//! itself for that sender only, and a flipped bit anywhere after the magic
//! is refused.
#![no_main]

use fenceline_proto::seal;
use libfuzzer_sys::fuzz_target;

const KEY: &[u8] = &[0x42; 32];

fuzz_target!(|data: &[u8]| {
    assert!(seal::open(KEY, "g", 1, 2, data).is_err() || data.len() >= seal::OVERHEAD);
    let _ = seal::unverified(data);
    let (node, pid) = match data {
        [a, b, ..] => (u32::from(*a), u32::from(*b)),
        _ => (0, 0),
    };
    let m = seal::seal(KEY, "g", node, pid, data);
    assert_eq!(seal::open(KEY, "g", node, pid, &m), Ok(data));
    assert!(seal::open(KEY, "g", node, pid.wrapping_add(1), &m).is_err());
    if !data.is_empty() {
        let i = 4 + usize::from(data[0]) % (m.len() - 4);
        let mut bad = m.clone();
        bad[i] ^= 0x01;
        assert!(seal::open(KEY, "g", node, pid, &bad).is_err(), "bit {i}");
    }
});
